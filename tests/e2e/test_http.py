"""The whole suite over HTTP only: every route's success and every error status a user can meet.

Real broker (a throwaway vhost), real databases (each test once on SQLite, once on PostgreSQL),
the real service classes; nothing mocked.
"""
import eventlet
import jwt
import pytest
from nameko.rpc import rpc

from gateway.service import GatewayService
from services.auth.service import AuthService
from tests.e2e.conftest import JWT_SECRET
from tests.support.broker import wait_until

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
SEED_BODY = {"email": "test@example.com", "password": "test123", "name": "Test User"}


def assert_error(response, status, code):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code and body["message"]
    assert isinstance(body["fields"], dict)
    return body


def test_the_seed_curl(api):
    # The seed's own body: "test123" is 7 characters and one of the most common passwords.
    body = assert_error(api.post("/api/auth/register", json=SEED_BODY,
                                 headers={"Content-Type": "application/json"}),
                        400, "validation_error")
    assert list(body["fields"]) == ["password"]

    response = api.post("/api/auth/register", json=dict(SEED_BODY, password=PASSWORD))
    assert response.status_code == 201, response.text
    user = response.json()
    assert user["email"] == "test@example.com" and user["name"] == "Test User"
    assert user["role"] == "student" and isinstance(user["id"], int)
    assert set(user) == {"id", "email", "name", "role", "created_at"}

    assert_error(api.post("/api/auth/register", json=dict(SEED_BODY, password=PASSWORD,
                                                          email="TEST@example.com")),
                 409, "conflict")


def test_register_login_create_enroll_review_story(api):
    grace = api.register("grace@example.com", PASSWORD, "Grace Hopper", role="instructor").json()
    assert grace["role"] == "instructor"
    assert api.register("ada@example.com", PASSWORD, "Ada Lovelace").status_code == 201

    login = api.post("/api/auth/login", json={"email": "grace@example.com", "password": PASSWORD})
    assert login.status_code == 200
    assert login.json()["token_type"] == "bearer" and login.json()["expires_in"] > 0
    grace_token = login.json()["access_token"]
    ada_token = api.login("ADA@example.com", PASSWORD)
    assert jwt.decode(ada_token, JWT_SECRET, algorithms=["HS256"])["role"] == "student"

    me = api.get("/api/users/me", token=ada_token)
    assert me.status_code == 200 and me.json()["email"] == "ada@example.com"

    # courses: instructors only
    assert_error(api.post("/api/courses", token=ada_token,
                          json={"title": "Mine", "description": "no"}), 403, "forbidden")
    created = api.post("/api/courses", token=grace_token,
                       json={"title": "Python Fundamentals", "description": "From zero"})
    assert created.status_code == 201, created.text
    course = created.json()
    assert course["instructor_id"] == grace["id"] and course["rating_average"] is None
    second = api.post("/api/courses", token=grace_token,
                      json={"title": "Advanced Python", "description": ""}).json()

    listing = api.get("/api/courses", params={"page": 1, "per_page": 1})
    assert listing.status_code == 200
    page = listing.json()
    assert page["total"] == 2 and page["per_page"] == 1 and page["page"] == 1
    assert [item["id"] for item in page["items"]] == [second["id"]]  # newest first
    assert api.get("/api/courses", params={"page": 2, "per_page": 1}).json()["items"][0][
        "id"] == course["id"]
    # the same page by the first page's cursor, and a cursor that is not one
    after = api.get("/api/courses", params={"after": page["next"], "per_page": 1}).json()
    assert [item["id"] for item in after["items"]] == [course["id"]]
    assert (after["page"], after["next"]) == (None, None)
    body = assert_error(api.get("/api/courses", params={"after": "bm90IGEgY3Vyc29y"}),
                        400, "validation_error")
    assert list(body["fields"]) == ["after"]
    assert api.get(f"/api/courses/{course['id']}").json()["title"] == "Python Fundamentals"

    # review before enrolling: 403
    assert_error(api.post(f"/api/courses/{course['id']}/reviews", token=ada_token,
                          json={"rating": 5}), 403, "forbidden")

    enrolled = api.post(f"/api/courses/{course['id']}/enroll", token=ada_token)
    assert enrolled.status_code == 201, enrolled.text
    assert enrolled.json()["course_id"] == course["id"]
    assert enrolled.json()["user_id"] == me.json()["id"]
    assert_error(api.post(f"/api/courses/{course['id']}/enroll", token=ada_token),
                 409, "conflict")

    review = api.post(f"/api/courses/{course['id']}/reviews", token=ada_token,
                      json={"rating": 4, "comment": "Clear and practical"})
    assert review.status_code == 201, review.text
    assert review.json()["rating"] == 4 and review.json()["user_id"] == me.json()["id"]
    assert_error(api.post(f"/api/courses/{course['id']}/reviews", token=ada_token,
                          json={"rating": 5}), 409, "conflict")

    reviews = api.get(f"/api/courses/{course['id']}/reviews").json()
    assert reviews["total"] == 1 and reviews["items"][0]["comment"] == "Clear and practical"

    # the rating and enrollment count arrive by event
    updated = wait_until(lambda: (lambda c: c if c["rating_count"] == 1 else None)(
        api.get(f"/api/courses/{course['id']}").json()), timeout=30,
        message="the course's rating updated")
    assert updated["rating_average"] == 4 and updated["enrollment_count"] == 1

    # notifications: Ada's welcome and enrollment confirmation; Grace's new review
    def kinds(token):
        response = api.get("/api/users/me/notifications", token=token)
        assert response.status_code == 200
        return {item["kind"] for item in response.json()["items"]}

    wait_until(lambda: {"welcome", "enrollment_confirmed"} <= kinds(ada_token), timeout=30,
               message="Ada's notifications")
    wait_until(lambda: "new_review" in kinds(grace_token), timeout=30,
               message="Grace's new-review notification")
    assert_error(api.get("/api/users/me/notifications", params={"per_page": 0},
                         token=ada_token), 400, "validation_error")


def test_error_statuses(api):
    assert api.register("ada@example.com", PASSWORD, "Ada").status_code == 201
    token = api.login("ada@example.com", PASSWORD)

    # 400: invalid values, unknown fields, wrong types, bad JSON, wrong content type
    body = assert_error(api.register("not-an-email", PASSWORD, ""), 400, "validation_error")
    assert {"email", "name"} <= set(body["fields"])
    body = assert_error(api.post("/api/auth/register", json={
        "email": "b@example.com", "password": PASSWORD, "name": "B", "role": "admin"}),
        400, "validation_error")
    assert "role" in body["fields"]
    body = assert_error(api.post("/api/auth/register", json={
        "email": "b@example.com", "password": PASSWORD, "name": "B", "id": 1}),
        400, "validation_error")
    assert "id" in body["fields"]
    assert_error(api.post("/api/auth/login", data="{nope",
                          headers={"Content-Type": "application/json"}), 400, "bad_request")
    assert_error(api.post("/api/auth/login", data="email=a", headers={
        "Content-Type": "application/x-www-form-urlencoded"}), 400, "bad_request")
    body = assert_error(api.get("/api/courses", params={"per_page": 500}), 400,
                        "validation_error")
    assert "per_page" in body["fields"]

    # 401: wrong password, no token, expired token, alg none
    assert_error(api.post("/api/auth/login", json={"email": "ada@example.com",
                                                   "password": "wrong password"}),
                 401, "unauthorized")
    assert_error(api.post("/api/auth/login", json={"email": "nobody@example.com",
                                                   "password": PASSWORD}),
                 401, "unauthorized")
    assert_error(api.get("/api/users/me"), 401, "unauthorized")
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    expired = jwt.encode(dict(claims, exp=claims["iat"] - 1), JWT_SECRET, algorithm="HS256")
    assert_error(api.get("/api/users/me", token=expired), 401, "unauthorized")
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert_error(api.get("/api/users/me", token=unsigned), 401, "unauthorized")
    assert_error(api.post("/api/courses/1/enroll"), 401, "unauthorized")

    # 404: unknown course, non-numeric and out-of-range ids, unknown paths
    assert_error(api.get("/api/courses/424242"), 404, "not_found")
    assert_error(api.post("/api/courses/424242/enroll", token=token), 404, "not_found")
    assert_error(api.get("/api/courses/abc"), 404, "not_found")
    assert_error(api.get("/api/courses/99999999999999999999"), 404, "not_found")
    assert_error(api.get("/api/courses/abc/reviews"), 404, "not_found")
    assert_error(api.get("/api/nope"), 404, "not_found")

    # 405, 413
    assert_error(api.request("PUT", "/api/courses"), 405, "method_not_allowed")
    assert_error(api.request("DELETE", "/api/users/me", token=token), 405,
                 "method_not_allowed")
    assert_error(api.post("/api/auth/register", json={
        "email": "b@example.com", "password": "x" * 70_000, "name": "B"}),
        413, "payload_too_large")


def test_failed_logins_for_one_account_are_throttled(start_suite):
    # from the address that failed: the right password waits too (tests/security: not others)
    api = start_suite(LOGIN_FREE_FAILURES_PER_ACCOUNT=3, LOGIN_DELAY_BASE_SECONDS=60,
                      LOGIN_FAILURE_WINDOW_SECONDS=300)
    assert api.register("ada@example.com", PASSWORD, "Ada").status_code == 201
    for _ in range(3):
        assert_error(api.post("/api/auth/login", json={"email": "ada@example.com",
                                                       "password": "guess"}),
                     401, "unauthorized")
    response = api.post("/api/auth/login", json={"email": "ada@example.com",
                                                 "password": PASSWORD})
    assert_error(response, 429, "too_many_requests")
    assert 1 <= int(response.headers["Retry-After"]) <= 300
    assert api.register("bob@example.com", PASSWORD, "Bob").status_code == 201
    assert api.login("bob@example.com", PASSWORD)


def test_health_names_every_dependency(api):
    response = api.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["unavailable"] == []
    assert body["checks"] == {
        "broker": "ok", "auth": "ok", "auth.database": "ok", "course": "ok",
        "course.database": "ok", "review": "ok", "review.database": "ok",
        "notification": "ok", "notification.database": "ok", "analytics": "ok",
        "analytics.database": "ok"}


def test_openapi_document_is_served(api):
    response = api.get("/api/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert "/api/courses/{course_id}/reviews" in document["paths"]
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


class SlowCourse:
    """Stands in for the course service and never answers in time."""
    name = "course"

    @rpc
    def list_courses(self, page=1, per_page=20, after=None):
        eventlet.sleep(30)

    @rpc
    def health(self):
        eventlet.sleep(30)


def test_a_service_that_does_not_answer_is_503(start_suite):
    api = start_suite(GatewayService, AuthService, SlowCourse, RPC_TIMEOUT=1, HEALTH_TIMEOUT=1)
    # the course service does not answer in time; review and notification are not running
    assert_error(api.get("/api/courses"), 503, "service_unavailable")
    assert_error(api.get("/api/courses/1/reviews"), 503, "service_unavailable")
    assert api.register("ada@example.com", PASSWORD, "Ada").status_code == 201

    response = api.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["broker"] == "ok" and body["checks"]["auth.database"] == "ok"
    assert {"course", "review", "notification"} <= set(body["unavailable"])
    assert "auth" not in body["unavailable"]
