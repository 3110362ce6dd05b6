"""course's rules, through its entrypoints with nameko's worker_factory (no broker).

The database is a real in-memory SQLite session; auth (RPC) and the dispatcher are mocks.
"""

import pytest

from services.course.commands import UnknownCourse
from services.course.models import Base
from services.course.service import CourseService
from services.kit.envelope import new_event
from services.kit.errors import Conflict, Forbidden, NotFound, ValidationError
from tests.support.db import in_memory_session, rpc_worker

INSTRUCTOR = {"id": 7, "email": "grace@example.com", "name": "Grace", "role": "instructor",
              "created_at": "2026-11-26T10:00:00+00:00"}
STUDENT = dict(INSTRUCTOR, id=8, role="student")


@pytest.fixture
def session():
    with in_memory_session(Base.metadata) as session:
        yield session


@pytest.fixture
def service(session):
    service = rpc_worker(CourseService, session)
    service.auth.get_user.side_effect = lambda user_id: {7: INSTRUCTOR, 8: STUDENT}[user_id]
    return service


def make_course(service, title="Python Fundamentals"):
    return service.create_course(7, title, "From zero to classes.")


def test_an_instructor_creates_a_course(service):
    course = make_course(service)

    assert course["title"] == "Python Fundamentals"
    assert course["instructor_id"] == 7
    assert course["rating_average"] is None
    assert course["rating_count"] == 0 and course["enrollment_count"] == 0
    assert course["created_at"].endswith("+00:00")
    service.auth.get_user.assert_called_once_with(7)
    service.dispatch.assert_called_once_with(
        "course.created", {"course_id": course["id"], "title": "Python Fundamentals",
                           "instructor_id": 7})
    assert service.get_course(course["id"]) == course


def test_a_student_cannot_create_a_course(service):
    with pytest.raises(Forbidden):
        service.create_course(8, "Mine", "no")
    service.dispatch.assert_not_called()
    assert service.list_courses()["total"] == 0


def test_an_unknown_instructor_is_not_found(service):
    service.auth.get_user.side_effect = NotFound("user 99 does not exist")
    with pytest.raises(NotFound):
        service.create_course(99, "Title", "Description")


@pytest.mark.parametrize("args, field", [
    ((7, "", "d"), "title"),
    ((7, "t" * 201, "d"), "title"),
    ((7, "Title", None), "description"),
    (("7", "Title", "d"), "instructor_id"),
])
def test_create_course_validates_before_asking_auth(service, args, field):
    with pytest.raises(ValidationError) as caught:
        service.create_course(*args)
    assert field in caught.value.fields
    service.auth.get_user.assert_not_called()


def test_list_courses_newest_first_and_paginated(service):
    ids = [make_course(service, f"Course {n}")["id"] for n in range(5)]

    first = service.list_courses(page=1, per_page=2)
    assert [c["id"] for c in first["items"]] == ids[::-1][:2]
    assert (first["page"], first["per_page"], first["total"]) == (1, 2, 5)
    last = service.list_courses(page=3, per_page=2)
    assert [c["id"] for c in last["items"]] == [ids[0]]
    with pytest.raises(ValidationError):
        service.list_courses(page=0)
    with pytest.raises(ValidationError):
        service.list_courses(per_page=101)


def test_get_unknown_course(service):
    with pytest.raises(NotFound):
        service.get_course(12345)


def test_enroll_once(service):
    course = make_course(service)
    service.dispatch.reset_mock()

    enrollment = service.enroll(8, course["id"])

    assert enrollment["user_id"] == 8 and enrollment["course_id"] == course["id"]
    assert enrollment["course_title"] == "Python Fundamentals"
    assert enrollment["enrolled_at"].endswith("+00:00")
    service.dispatch.assert_called_once_with(
        "course.enrolled", {"enrollment_id": enrollment["id"], "user_id": 8,
                            "course_id": course["id"], "course_title": "Python Fundamentals"})
    assert service.is_enrolled(8, course["id"]) is True
    assert service.is_enrolled(9, course["id"]) is False
    with pytest.raises(Conflict):
        service.enroll(8, course["id"])
    assert service.get_course(course["id"])["enrollment_count"] == 1


def test_instructors_cannot_enroll_in_their_own_course(service):
    course = make_course(service)
    service.dispatch.reset_mock()
    with pytest.raises(Forbidden, match="own course"):
        service.enroll(7, course["id"])
    service.dispatch.assert_not_called()
    assert service.get_course(course["id"])["enrollment_count"] == 0


def test_enroll_in_an_unknown_course(service):
    with pytest.raises(NotFound):
        service.enroll(8, 4242)
    service.dispatch.assert_not_called()


def test_list_enrollments_of_one_user(service):
    first, second = make_course(service, "First"), make_course(service, "Second")
    service.enroll(8, first["id"])
    service.enroll(8, second["id"])
    service.enroll(9, first["id"])

    page = service.list_enrollments(8)
    assert [e["course_title"] for e in page["items"]] == ["Second", "First"]
    assert page["total"] == 2
    assert service.list_enrollments(10)["items"] == []
    with pytest.raises(ValidationError):
        service.list_enrollments(8, per_page=0)


def review_created(course_id, rating, **extra):
    return new_event("review.created", {"review_id": 1, "user_id": 8, "course_id": course_id,
                                        "rating": rating, "has_comment": False, **extra},
                     source="review")


def test_update_rating_keeps_count_and_average(service, session):
    course = make_course(service)
    for rating in (5, 4, 4):
        service.update_rating(review_created(course["id"], rating))
        session.commit()  # the kit commits after the handler (with the inbox record)

    course = service.get_course(course["id"])
    assert course["rating_count"] == 3
    assert course["rating_average"] == 4.33


@pytest.mark.parametrize("rating", [0, 6, "5", None])
def test_update_rating_refuses_unusable_data(service, rating):
    course = make_course(service)
    with pytest.raises(ValidationError):
        service.update_rating(review_created(course["id"], rating))


def test_update_rating_for_an_unknown_course_fails_so_the_event_is_parked(service):
    with pytest.raises(UnknownCourse):
        service.update_rating(review_created(999, 3))


def test_health(service):
    assert service.health() == {"service": "course", "database": "ok"}
