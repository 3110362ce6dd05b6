"""auth, course and review running for real: the RabbitMQ broker (a throwaway vhost per test) and
each service's own migrated database, on SQLite and on PostgreSQL. Called over RPC like the
gateway calls them; their events read by a plain pika consumer on knowledge_nest_events.
"""
import json
import time

import eventlet
import pytest
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import text

from services.auth.service import AuthService
from services.course.service import CourseService
from services.kit.db import Database
from services.kit.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationError
from services.review.service import ReviewService
from tests.support.broker import wait_until

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
# argon2id at its cheapest, for tests only (production uses argon2-cffi's defaults)
CHEAP_HASHING = dict(PASSWORD_HASH_TIME_COST=1, PASSWORD_HASH_MEMORY_COST=1024,
                     PASSWORD_HASH_PARALLELISM=1)


@pytest.fixture
def config(services_config):
    return services_config("auth", "course", "review", **CHEAP_HASHING)


@pytest.fixture
def events_queue(plain):
    """A queue receiving every event, bound before the services start."""
    return plain.bind_queue("#")


@pytest.fixture
def rpc(runner_factory, config, events_queue):
    runner = runner_factory(config, AuthService, CourseService, ReviewService)
    runner.start()
    with ClusterRpcProxy(config, timeout=60) as proxy:
        yield proxy


def next_event(plain, queue, event_type):
    method, properties, body = plain.get(queue, timeout=20)
    envelope = json.loads(body)
    assert method.routing_key == event_type
    assert envelope["event_type"] == event_type
    assert properties.message_id == envelope["event_id"]
    return envelope


def test_register_create_enroll_review_story(rpc, plain, events_queue):
    grace = rpc.auth.register("Grace@Example.com", PASSWORD, "Grace Hopper", role="instructor")
    assert grace["email"] == "grace@example.com" and grace["role"] == "instructor"
    assert "password_hash" not in grace and "password" not in grace
    assert next_event(plain, events_queue, "user.registered")["data"] == {
        "user_id": grace["id"], "email": "grace@example.com", "name": "Grace Hopper"}

    ada = rpc.auth.register("ada@example.com", PASSWORD, "Ada")
    assert ada["role"] == "student"
    event = next_event(plain, events_queue, "user.registered")
    assert event["data"]["user_id"] == ada["id"] and event["source"] == "auth"
    assert rpc.auth.authenticate(" ADA@example.com", PASSWORD) == ada
    assert rpc.auth.get_user(ada["id"]) == ada

    course = rpc.course.create_course(grace["id"], "Python Fundamentals", "From zero to classes.")
    assert course["instructor_id"] == grace["id"]
    assert (course["rating_average"], course["rating_count"], course["enrollment_count"]) == (
        None, 0, 0)
    assert next_event(plain, events_queue, "course.created")["data"] == {
        "course_id": course["id"], "title": "Python Fundamentals", "instructor_id": grace["id"]}

    enrollment = rpc.course.enroll(ada["id"], course["id"])
    assert enrollment["course_title"] == "Python Fundamentals"
    assert next_event(plain, events_queue, "course.enrolled")["data"] == {
        "enrollment_id": enrollment["id"], "user_id": ada["id"], "course_id": course["id"],
        "course_title": "Python Fundamentals"}
    assert rpc.course.is_enrolled(ada["id"], course["id"]) is True
    assert rpc.course.list_enrollments(ada["id"])["items"] == [enrollment]

    review = rpc.review.create_review(ada["id"], course["id"], 4, "Clear and practical.")
    assert (review["rating"], review["comment"]) == (4, "Clear and practical.")
    assert next_event(plain, events_queue, "review.created")["data"] == {
        "review_id": review["id"], "user_id": ada["id"], "course_id": course["id"],
        "rating": 4, "has_comment": True}
    assert rpc.review.list_reviews(course["id"]) == {
        "items": [review], "page": 1, "per_page": 20, "total": 1, "next": None}

    # the rating aggregate follows through the review.created event
    rated = wait_until(lambda: (c := rpc.course.get_course(course["id"]))["rating_count"] and c,
                       timeout=30, message="course rating updated")
    assert (rated["rating_count"], rated["rating_average"], rated["enrollment_count"]) == (
        1, 4.0, 1)
    assert rpc.course.list_courses()["items"] == [rated]
    assert plain.get_all(events_queue) == []  # nothing else, nothing twice

    for name in ("auth", "course", "review"):
        assert getattr(rpc, name).health() == {"service": name, "database": "ok"}


def test_expected_errors_arrive_as_typed_exceptions(rpc):
    grace = rpc.auth.register("grace@example.com", PASSWORD, "Grace", role="instructor")
    ada = rpc.auth.register("ada@example.com", PASSWORD, "Ada")
    bob = rpc.auth.register("bob@example.com", PASSWORD, "Bob")

    with pytest.raises(Conflict):
        rpc.auth.register("  GRACE@example.COM", PASSWORD, "Other Grace")
    with pytest.raises(ValidationError) as weak:
        rpc.auth.register("carol@example.com", "letmein1", "Carol")
    assert "password" in weak.value.fields
    with pytest.raises(Unauthorized) as wrong_password:
        rpc.auth.authenticate("ada@example.com", "not my password")
    with pytest.raises(Unauthorized) as unknown_email:
        rpc.auth.authenticate("nobody@example.com", PASSWORD)
    assert str(wrong_password.value) == str(unknown_email.value)
    with pytest.raises(NotFound):
        rpc.auth.get_user(10_000)

    with pytest.raises(Forbidden):
        rpc.course.create_course(ada["id"], "Not mine to teach", "...")
    with pytest.raises(NotFound):
        rpc.course.create_course(10_000, "Ghost course", "...")
    course = rpc.course.create_course(grace["id"], "Python Fundamentals", "...")
    with pytest.raises(NotFound):
        rpc.course.get_course(course["id"] + 1)
    with pytest.raises(NotFound):
        rpc.course.enroll(ada["id"], course["id"] + 1)
    rpc.course.enroll(ada["id"], course["id"])
    with pytest.raises(Conflict):
        rpc.course.enroll(ada["id"], course["id"])
    with pytest.raises(ValidationError):
        rpc.course.list_courses(page=0)

    with pytest.raises(NotFound):
        rpc.review.create_review(ada["id"], course["id"] + 1, 5)
    with pytest.raises(Forbidden):
        rpc.review.create_review(bob["id"], course["id"], 5)
    with pytest.raises(ValidationError) as bad_rating:
        rpc.review.create_review(ada["id"], course["id"], 6)
    assert "rating" in bad_rating.value.fields
    rpc.review.create_review(ada["id"], course["id"], 5)
    with pytest.raises(Conflict):
        rpc.review.create_review(ada["id"], course["id"], 1)
    assert rpc.review.list_reviews(course["id"])["total"] == 1


def test_concurrent_registrations_of_one_email_give_one_user_and_conflicts(rpc, plain,
                                                                         events_queue):
    replies = [rpc.auth.register.call_async(f"  Same@Example.com{' ' * n}", PASSWORD, f"N{n}")
               for n in range(10)]
    created, conflicts = [], 0
    for reply in replies:
        try:
            created.append(reply.result())
        except Conflict:
            conflicts += 1
    assert len(created) == 1 and conflicts == 9
    assert next_event(plain, events_queue, "user.registered")["data"]["user_id"] == \
        created[0]["id"]
    eventlet.sleep(1)
    assert plain.get_all(events_queue) == []


def test_two_hundred_concurrent_enrollments_and_reviews_keep_exact_counts(rpc):
    grace = rpc.auth.register("grace@example.com", PASSWORD, "Grace", role="instructor")
    course = rpc.course.create_course(grace["id"], "Popular", "Everybody takes this one.")
    students = [reply.result() for reply in [
        rpc.auth.register.call_async(f"student{n}@example.com", PASSWORD, f"Student {n}")
        for n in range(200)]]
    ratings = [1 + (n * n) % 5 for n in range(200)]  # uneven: 1, 2 and 5 in various numbers

    # all sent at once: the services work on them concurrently (max_workers each)
    enrollments = [reply.result() for reply in [
        rpc.course.enroll.call_async(student["id"], course["id"]) for student in students]]
    assert len({e["id"] for e in enrollments}) == 200
    reviews = [reply.result() for reply in [
        rpc.review.create_review.call_async(student["id"], course["id"], rating)
        for student, rating in zip(students, ratings)]]
    assert sorted(r["rating"] for r in reviews) == sorted(ratings)

    expected_average = round(sum(ratings) / 200, 2)
    final = wait_until(
        lambda: (c := rpc.course.get_course(course["id"]))["rating_count"] == 200 and c,
        timeout=60, interval=0.2, message="200 ratings counted")
    assert final["enrollment_count"] == 200
    assert final["rating_average"] == expected_average
    assert rpc.review.list_reviews(course["id"], per_page=1)["total"] == 200
    eventlet.sleep(1)  # nothing counted twice later
    assert rpc.course.get_course(course["id"])["rating_count"] == 200


@pytest.mark.postgres
def test_pg8000_queries_do_not_block_other_greenthreads(container_factory, rabbit_config,
                                                       make_service_database):
    """The service's PostgreSQL engine is green: 10 half-second queries overlap (a blocking
    driver would take 5 s)."""
    config = dict(rabbit_config, DB_URIS={"course:Base": make_service_database("course",
                                                                              "postgresql")})
    container = container_factory(CourseService, config)
    container.start()
    [database] = [dep for dep in container.extensions if isinstance(dep, Database)]
    assert database.engine.dialect.driver == "pg8000"

    def slow_query(_):
        with database.engine.connect() as connection:
            connection.execute(text("SELECT pg_sleep(0.5)"))

    start = time.monotonic()
    list(eventlet.GreenPool(10).imap(slow_query, range(10)))
    assert time.monotonic() - start < 2.5
