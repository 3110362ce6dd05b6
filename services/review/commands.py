"""review's business rules, as plain functions of a SQLAlchemy session (the service wires them).

They do not commit: the kit commits each RPC's session when it succeeds (services/kit/rpc.py).
"""
import logging

from sqlalchemy import select

from contracts import REVIEW_CREATED
from services.kit.errors import Forbidden
from services.kit.schemas import dumper, page_of
from services.review.models import Review
from services.review.schemas import CourseIdArgs, CreateReviewArgs, ReviewSchema

log = logging.getLogger(__name__)

def validate_new_review(user_id, course_id, rating, comment):
    args = CreateReviewArgs.shared().load_or_raise(
        {"user_id": user_id, "course_id": course_id, "rating": rating, "comment": comment})
    if args["comment"] is not None:
        args["comment"] = args["comment"].strip() or None
    return args


def check_may_review(course_service, args):
    """Ask the course service (before any database work): NotFound if there is no such course,
    Forbidden for its own instructor (a rating of one's own course is no review) and unless the
    user is enrolled in it."""
    course = course_service.get_course(args["course_id"])  # raises NotFound
    if course["instructor_id"] == args["user_id"]:
        raise Forbidden("instructors cannot review their own course")
    if not course_service.is_enrolled(args["user_id"], args["course_id"]):
        raise Forbidden("only students enrolled in this course can review it")


def create_review(session, dispatch, args):
    review = Review(user_id=args["user_id"], course_id=args["course_id"], rating=args["rating"],
                    comment=args["comment"])
    session.add(review)
    session.flush()  # the id; a second review fails here with Conflict (models.py)
    dispatch(REVIEW_CREATED, {"review_id": review.id, "user_id": review.user_id,
                                "course_id": review.course_id, "rating": review.rating,
                                "has_comment": review.comment is not None})
    return dumper(ReviewSchema).dump(review)


def list_reviews(session, course_id, page, per_page, after=None):
    args = CourseIdArgs.shared().load_or_raise({"course_id": course_id})
    query = select(Review).where(Review.course_id == args["course_id"])
    return page_of(session, query, (Review.id,), page, per_page, dumper(ReviewSchema), after=after)
