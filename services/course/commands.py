"""course's business rules, as plain functions of a SQLAlchemy session (the service wires them).

Aggregates (enrollment_count, rating_count, rating_sum) change only through atomic UPDATEs
(``x = x + 1`` in SQL), never read-modify-write, so concurrent writers cannot lose an update.
They do not commit: the kit commits each RPC's session when it succeeds (services/kit/rpc.py),
and each event handler's with its inbox record; answers are dumped before that.
"""
import logging

from sqlalchemy import select, update

from contracts import COURSE_CREATED, COURSE_ENROLLED, REVIEW_CREATED
from services.course.models import Course, Enrollment
from services.course.schemas import (
    CourseIdArgs, CourseSchema, CreateCourseArgs, EnrollArgs, EnrollmentSchema, UserIdArgs,
)
from services.kit.errors import Forbidden, NotFound
from services.kit.schemas import dumper, page_of

log = logging.getLogger(__name__)

# An instructor teaches their course, they do not take it: an enrollment of their own would
# count in its public enrollment figures and analytics, mail them a welcome to it, and open the
# way to reviewing it.
OWN_COURSE = "instructors cannot enroll in their own course"


def validate_new_course(instructor_id, title, description):
    return CreateCourseArgs.shared().load_or_raise(
        {"instructor_id": instructor_id, "title": title, "description": description})


def create_course(session, dispatch, args, instructor):
    """``args`` from validate_new_course; ``instructor`` the user auth answered for its id."""
    if instructor.get("role") != "instructor":
        raise Forbidden("only instructors can create courses")
    course = Course(instructor_id=args["instructor_id"], title=args["title"],
                    description=args["description"])
    session.add(course)
    session.flush()  # the id, for the event
    dispatch(COURSE_CREATED, {"course_id": course.id, "title": course.title,
                                "instructor_id": course.instructor_id})
    log.info("course %s created by instructor %s", course.id, course.instructor_id)
    return dumper(CourseSchema).dump(course)


def list_courses(session, page, per_page, after=None):
    return page_of(session, select(Course), (Course.id,), page, per_page, dumper(CourseSchema),
                   after=after)


def find_course(session, course_id):
    args = CourseIdArgs.shared().load_or_raise({"course_id": course_id})
    course = session.get(Course, args["course_id"])
    if course is None:
        raise NotFound(f"course {args['course_id']} does not exist")
    return course


def get_course(session, course_id):
    return dumper(CourseSchema).dump(find_course(session, course_id))


def enroll(session, dispatch, user_id, course_id):
    args = EnrollArgs.shared().load_or_raise({"user_id": user_id, "course_id": course_id})
    course = find_course(session, args["course_id"])
    if course.instructor_id == args["user_id"]:
        raise Forbidden(OWN_COURSE)
    enrollment = Enrollment(user_id=args["user_id"], course=course)
    session.add(enrollment)
    session.flush()  # the id; a second enrollment fails here with Conflict (models.py)
    session.execute(update(Course).where(Course.id == course.id)
                    .values(enrollment_count=Course.enrollment_count + 1)
                    .execution_options(synchronize_session=False))
    dispatch(COURSE_ENROLLED, {"enrollment_id": enrollment.id, "user_id": enrollment.user_id,
                                 "course_id": course.id, "course_title": course.title})
    return dumper(EnrollmentSchema).dump(enrollment)  # before the kit's commit, which expires it


def list_enrollments(session, user_id, page, per_page, after=None):
    args = UserIdArgs.shared().load_or_raise({"user_id": user_id})
    query = select(Enrollment).where(Enrollment.user_id == args["user_id"])
    return page_of(session, query, (Enrollment.id,), page, per_page, dumper(EnrollmentSchema),
                   after=after)


def is_enrolled(session, user_id, course_id):
    args = EnrollArgs.shared().load_or_raise({"user_id": user_id, "course_id": course_id})
    return session.execute(
        select(Enrollment.id).where(Enrollment.user_id == args["user_id"],
                                    Enrollment.course_id == args["course_id"])
    ).first() is not None


class UnknownCourse(LookupError):
    """A review.created for a course this service does not have: parked in the DLQ."""


def record_rating(session, data):
    """Add one review's rating to its course's aggregate (the caller commits, with the inbox)."""
    args = REVIEW_CREATED.read(data)  # InvalidEventData (a ValidationError): parked at once
    result = session.execute(
        update(Course).where(Course.id == args["course_id"])
        .values(rating_count=Course.rating_count + 1,
                rating_sum=Course.rating_sum + args["rating"])
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise UnknownCourse(f"course {args['course_id']} does not exist")
