"""review's rules, through its entrypoints with nameko's worker_factory (no broker).

The database is a real in-memory SQLite session; course (RPC) and the dispatcher are mocks.
"""

import pytest

from services.kit.errors import Conflict, Forbidden, NotFound, ValidationError
from services.review.models import Base
from services.review.service import ReviewService
from tests.support.db import in_memory_session, rpc_worker

COURSE_ID = 3
ENROLLED = {(8, COURSE_ID), (9, COURSE_ID)}


@pytest.fixture
def session():
    with in_memory_session(Base.metadata) as session:
        yield session


INSTRUCTOR_ID = 40


def get_course(course_id):
    if course_id != COURSE_ID:
        raise NotFound(f"course {course_id} does not exist")
    return {"id": COURSE_ID, "title": "Python Fundamentals", "instructor_id": INSTRUCTOR_ID}


@pytest.fixture
def service(session):
    service = rpc_worker(ReviewService, session)
    service.course.get_course.side_effect = get_course
    service.course.is_enrolled.side_effect = lambda user_id, course_id: (
        (user_id, course_id) in ENROLLED)
    return service


def test_an_enrolled_student_reviews_a_course(service):
    review = service.create_review(8, COURSE_ID, 5, "  Clear and practical.  ")

    assert {k: review[k] for k in ("user_id", "course_id", "rating", "comment")} == {
        "user_id": 8, "course_id": COURSE_ID, "rating": 5, "comment": "Clear and practical."}
    assert review["created_at"].endswith("+00:00")
    service.dispatch.assert_called_once_with(
        "review.created", {"review_id": review["id"], "user_id": 8, "course_id": COURSE_ID,
                           "rating": 5, "has_comment": True})


def test_the_comment_is_optional(service):
    review = service.create_review(8, COURSE_ID, 3)
    assert review["comment"] is None
    assert service.dispatch.call_args.args[1]["has_comment"] is False


def test_one_review_per_user_and_course(service):
    service.create_review(8, COURSE_ID, 4)
    with pytest.raises(Conflict):
        service.create_review(8, COURSE_ID, 2, "changed my mind")
    assert service.dispatch.call_count == 1
    assert service.list_reviews(COURSE_ID)["total"] == 1


def test_instructors_cannot_review_their_own_course(service):
    ENROLLED.add((INSTRUCTOR_ID, COURSE_ID))  # even if enrolled before that was refused
    try:
        with pytest.raises(Forbidden, match="own course"):
            service.create_review(INSTRUCTOR_ID, COURSE_ID, 5)
    finally:
        ENROLLED.discard((INSTRUCTOR_ID, COURSE_ID))
    service.dispatch.assert_not_called()


def test_not_enrolled_is_forbidden(service):
    with pytest.raises(Forbidden):
        service.create_review(10, COURSE_ID, 4)
    service.dispatch.assert_not_called()


def test_unknown_course_is_not_found(service):
    with pytest.raises(NotFound):
        service.create_review(8, 77, 4)
    service.course.is_enrolled.assert_not_called()


@pytest.mark.parametrize("rating, comment, field", [
    (0, None, "rating"),
    (6, None, "rating"),
    ("5", None, "rating"),
    (4.5, None, "rating"),
    (True, None, "rating"),
    (None, None, "rating"),
    (4, "x" * 2001, "comment"),
    (4, 42, "comment"),
])
def test_invalid_input_is_refused_before_asking_course(service, rating, comment, field):
    with pytest.raises(ValidationError) as caught:
        service.create_review(8, COURSE_ID, rating, comment)
    assert field in caught.value.fields
    service.course.get_course.assert_not_called()


def test_a_2000_character_comment_is_fine(service):
    assert len(service.create_review(8, COURSE_ID, 4, "x" * 2000)["comment"]) == 2000


def test_list_reviews_newest_first_paginated(service):
    first = service.create_review(8, COURSE_ID, 4)
    second = service.create_review(9, COURSE_ID, 2, "too fast")

    page = service.list_reviews(COURSE_ID, page=1, per_page=1)
    assert [r["id"] for r in page["items"]] == [second["id"]]
    assert page["total"] == 2
    assert [r["id"] for r in service.list_reviews(COURSE_ID, 2, 1)["items"]] == [first["id"]]
    after = service.list_reviews(COURSE_ID, per_page=1, after=page["next"])
    assert [r["id"] for r in after["items"]] == [first["id"]] and after["next"] is None
    assert service.list_reviews(COURSE_ID + 1)["items"] == []
    with pytest.raises(ValidationError):
        service.list_reviews(COURSE_ID, per_page=500)


def test_health(service):
    assert service.health() == {"service": "review", "database": "ok"}
