"""The HTTP gateway with its RPC proxies replaced by mocks: a real web server on a free port,
driven with ``requests``. No broker, no database."""
import json
import os
import time

import amqp
import eventlet
import jwt
import kombu.exceptions
import pytest
import requests
from nameko.exceptions import (
    ConfigurationError, IncorrectSignature, MethodNotFound, RemoteError,
)
from nameko.messaging import QueueConsumer
from nameko.rpc import ReplyListener
from nameko.testing.services import replace_dependencies
from nameko.utils.concurrency import SpawningSet

from gateway.auth import DEV_JWT_SECRET
from gateway.service import GatewayService
from services.kit.errors import (Conflict, Forbidden, NotFound, ServiceUnavailable, TooManyRequests,
                                 Unauthorized, ValidationError)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROXIES = ("auth", "course", "review", "notification", "analytics")
SECRET = "unit-test-secret-that-is-long-enough-0123456789"
USER = {"id": 7, "email": "ada@example.com", "name": "Ada", "role": "student",
        "created_at": "2026-11-26T10:00:00+00:00"}
INSTRUCTOR = dict(USER, id=8, email="grace@example.com", role="instructor")
ADMIN = dict(USER, id=1, email="admin@example.com", role="admin")
USERS_BY_ID = {user["id"]: user for user in (USER, INSTRUCTOR, ADMIN)}
COURSE = {"id": 3, "title": "Python", "description": "Basics", "instructor_id": 8,
          "created_at": "2026-11-26T10:00:00+00:00", "rating_average": None,
          "rating_count": 0, "enrollment_count": 0}


@pytest.fixture
def gateway(container_factory, web_config, web_config_port):
    """Starts the gateway; returns (base url, mocks by service name)."""

    def start(**overrides):
        # no broker: every RPC proxy is a mock; the URI is only read, never used
        config = dict(web_config, AMQP_URI="pyamqp://guest:guest@127.0.0.1:1/", JWT_SECRET=SECRET, JWT_TTL_SECONDS=600, MAX_BODY_BYTES=1024)
        config.update(overrides)
        container = container_factory(GatewayService, config)
        mocks = replace_dependencies(container, *PROXIES)
        # replace_dependencies leaves the proxies' shared reply listener (and its queue
        # consumer) behind; they would try to reach a broker.
        container.subextensions = SpawningSet(
            extension for extension in container.subextensions
            if not isinstance(extension, (ReplyListener, QueueConsumer)))
        container.start()
        start.container = container
        mocks = dict(zip(PROXIES, mocks))
        # every signed-in route checks that the token's user exists (gateway/auth.py KnownUsers)
        mocks["auth"].get_user.side_effect = lambda user_id: USERS_BY_ID[user_id]
        return f"http://127.0.0.1:{web_config_port}", mocks

    return start


@pytest.fixture
def api(gateway):
    return gateway()


def token_for(user, secret=SECRET, algorithm="HS256", **claims):
    payload = {"sub": str(user["id"]), "role": user["role"], "exp": int(time.time()) + 600}
    payload.update(claims)
    payload = {key: value for key, value in payload.items() if value is not None}
    return jwt.encode(payload, secret, algorithm=algorithm)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def assert_error(response, status, code):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["fields"], dict)
    return body


# -- JWT ------------------------------------------------------------------------------------

def test_login_issues_a_token_that_then_signs_the_user_in(api):
    base, mocks = api
    mocks["auth"].authenticate.return_value = USER
    mocks["auth"].get_user.return_value = USER
    response = requests.post(f"{base}/api/auth/login",
                             json={"email": "ada@example.com", "password": "correct horse"})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 600
    claims = jwt.decode(body["access_token"], SECRET, algorithms=["HS256"])
    assert claims["sub"] == "7" and claims["role"] == "student"
    assert claims["exp"] - claims["iat"] == 600

    me = requests.get(f"{base}/api/users/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200 and me.json() == USER
    mocks["auth"].get_user.assert_called_once_with(7)


@pytest.mark.parametrize("token", [
    pytest.param(jwt.encode({"sub": "7", "role": "student", "exp": int(time.time()) + 600},
                            None, algorithm="none"), id="alg-none"),
    pytest.param(token_for(USER, exp=int(time.time()) - 10), id="expired"),
    pytest.param(token_for(USER, exp=None), id="no-exp"),
    pytest.param(token_for(USER, sub=None), id="no-sub"),
    pytest.param(token_for(USER, secret="another-secret-that-is-also-long-enough-xx"),
                 id="wrong-secret"),
    pytest.param(token_for(USER, algorithm="HS512"), id="hs512"),
    pytest.param(token_for(USER, sub="abc"), id="non-numeric-sub"),
    pytest.param(token_for(USER, role="superuser"), id="unknown-role"),
    pytest.param("not.a.token", id="garbage"),
])
def test_bad_tokens_are_refused(api, token):
    base, mocks = api
    mocks["auth"].get_user.return_value = USER
    assert_error(requests.get(f"{base}/api/users/me", headers=bearer(token)), 401,
                 "unauthorized")
    mocks["auth"].get_user.assert_not_called()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic YWRhOnB3"},
                                     {"Authorization": "Bearer "}])
def test_no_bearer_token_is_401(api, headers):
    base, _ = api
    assert_error(requests.get(f"{base}/api/users/me", headers=headers), 401, "unauthorized")


def test_who_acts_comes_from_the_token_not_the_body(api):
    base, mocks = api
    mocks["course"].enroll.return_value = {"id": 1, "user_id": 7, "course_id": 3,
                                           "course_title": "Python",
                                           "enrolled_at": "2026-11-26T10:00:00+00:00"}
    response = requests.post(f"{base}/api/courses/3/enroll", json={"user_id": 99},
                             headers=bearer(token_for(USER)))
    assert response.status_code == 201
    mocks["course"].enroll.assert_called_once_with(7, 3)


def test_students_cannot_create_courses(api):
    base, mocks = api
    # the rule is course's: it refuses a student (tests/unit/test_course.py)
    mocks["course"].create_course.side_effect = Forbidden("only instructors can create courses")
    response = requests.post(f"{base}/api/courses", json={"title": "T", "description": "D"},
                             headers=bearer(token_for(USER)))
    assert_error(response, 403, "forbidden")
    mocks["course"].create_course.assert_called_once_with(7, "T", "D")

    mocks["course"].create_course.reset_mock(side_effect=True)
    mocks["course"].create_course.return_value = COURSE
    response = requests.post(f"{base}/api/courses", json={"title": "T", "description": "D"},
                             headers=bearer(token_for(INSTRUCTOR)))
    assert response.status_code == 201 and response.json() == COURSE
    mocks["course"].create_course.assert_called_once_with(8, "T", "D")


def test_production_refuses_the_default_or_a_short_secret(gateway):
    with pytest.raises(ConfigurationError, match="JWT_SECRET"):
        gateway(ENVIRONMENT="production", JWT_SECRET=DEV_JWT_SECRET)


def test_production_refuses_a_short_secret(gateway):
    with pytest.raises(ConfigurationError, match="32 bytes"):
        gateway(ENVIRONMENT="production", JWT_SECRET="short-secret")


@pytest.mark.parametrize("secret,reason", [
    ("change-me-to-48-random-characters-before-any-real-use", "placeholder"),
    ("please-CHANGE_ME-0123456789abcdefghijkl", "placeholder"),
    ("x" * 64, "entropy"),
    ("abab" * 16, "entropy"),
    ("abc123" * 8, "entropy"),
    ("password" * 5, "entropy"),
])
def test_production_refuses_placeholders_and_low_entropy_secrets(gateway, secret, reason):
    with pytest.raises(ConfigurationError, match=reason):
        gateway(ENVIRONMENT="production", JWT_SECRET=secret)


@pytest.mark.parametrize("environment", ["prod", "Production ", "staging", ""])
def test_unknown_environments_stop_the_start(gateway, environment):
    if environment.strip().lower() == "production":
        base, _ = gateway(ENVIRONMENT=environment, JWT_SECRET=RANDOM_SECRET)
        return
    with pytest.raises(ConfigurationError, match="ENVIRONMENT"):
        gateway(ENVIRONMENT=environment, JWT_SECRET=DEV_JWT_SECRET)


RANDOM_SECRET = "q8Zr0W3kd1P9sXvN4mYt7LbE2uHcJ6aF5gTiKoRz"  # 40 random characters


def test_production_starts_with_a_long_random_secret(gateway):
    base, _ = gateway(ENVIRONMENT="production", JWT_SECRET=RANDOM_SECRET)
    assert requests.get(f"{base}/api/openapi.json").status_code == 200


def test_development_default_secret_is_loud(gateway, caplog):
    gateway(JWT_SECRET=DEV_JWT_SECRET)
    assert any("JWT_SECRET" in record.getMessage() and record.levelname == "WARNING"
               for record in caplog.records)


# -- the error table ------------------------------------------------------------------------

@pytest.mark.parametrize("exc, status, code", [
    (ValidationError("invalid input", {"password": ["Must be at least 8 characters long."]}),
     400, "validation_error"),
    (Unauthorized("no"), 401, "unauthorized"),
    (Forbidden("not enrolled"), 403, "forbidden"),
    (NotFound("course 3 does not exist"), 404, "not_found"),
    (Conflict("already enrolled"), 409, "conflict"),
    (ServiceUnavailable("course.enroll did not answer within 5s"), 503, "service_unavailable"),
])
def test_service_errors_map_to_statuses(api, exc, status, code):
    base, mocks = api
    mocks["course"].enroll.side_effect = exc
    response = requests.post(f"{base}/api/courses/3/enroll", headers=bearer(token_for(USER)))
    body = assert_error(response, status, code)
    if status < 500:
        assert body["message"] == exc.message and body["fields"] == exc.fields
    else:
        assert "5s" not in body["message"]
        assert response.headers["Retry-After"] == "2"


# What nameko answers when a service instance of another version than the gateway's does not
# know an argument the gateway sends (the first seen in a rolling deploy: `after=` of the pages)
# or the method itself: another instance may, so try again.
@pytest.mark.parametrize("exc", [
    IncorrectSignature("enroll() got an unexpected keyword argument 'after'"),
    MethodNotFound("enroll"),
])
def test_a_service_of_another_version_is_503_with_retry_after(api, exc):
    base, mocks = api
    mocks["course"].enroll.side_effect = exc
    response = requests.post(f"{base}/api/courses/3/enroll", headers=bearer(token_for(USER)))
    assert_error(response, 503, "service_unavailable")
    assert response.headers["Retry-After"] == "2"
    assert "unexpected keyword" not in response.text


# What kombu and py-amqp raised under an HTTP request while a broker node restarted (the first
# was seen as a 500 from TimedRpcProxy before it mapped broker errors).
@pytest.mark.parametrize("exc", [
    kombu.exceptions.OperationalError("[Errno 111] ECONNREFUSED"),
    ConnectionResetError(104, "Connection reset by peer"),
    amqp.exceptions.ChannelError("CHANNEL_ERROR - second 'channel.open' seen"),
    amqp.exceptions.RecoverableConnectionError("connection already closed"),
    amqp.exceptions.MessageNacked(),
])
def test_broker_errors_are_503_with_retry_after(api, exc):
    base, mocks = api
    mocks["course"].enroll.side_effect = exc
    response = requests.post(f"{base}/api/courses/3/enroll", headers=bearer(token_for(USER)))
    assert_error(response, 503, "service_unavailable")
    assert response.headers["Retry-After"] == "2"
    assert "ECONNREFUSED" not in response.text


@pytest.mark.parametrize("exc", [
    RemoteError("OperationalError", "(sqlite3.OperationalError) no such table: courses"),
    KeyError("secret internals"),
])
def test_unexpected_errors_are_500_without_details(api, exc):
    base, mocks = api
    mocks["course"].get_course.side_effect = exc
    response = requests.get(f"{base}/api/courses/3")
    assert response.status_code == 500
    assert response.json() == {"error": "internal_error", "message": "internal error",
                               "fields": {}}
    assert "sqlite" not in response.text and "Traceback" not in response.text


def test_password_policy_error_names_the_field(api):
    base, mocks = api
    mocks["auth"].register.side_effect = ValidationError(
        "invalid input", {"password": ["Must be at least 8 characters long."]})
    body = assert_error(requests.post(f"{base}/api/auth/register", json={
        "email": "test@example.com", "password": "test123", "name": "Test User"}),
        400, "validation_error")
    assert "password" in body["fields"]
    mocks["auth"].register.assert_called_once_with("test@example.com", "test123", "Test User",
                                                   "student")


# -- bad input ------------------------------------------------------------------------------

def test_bad_json_is_400(api):
    base, mocks = api
    response = requests.post(f"{base}/api/auth/register", data=b'{"email": ',
                             headers={"Content-Type": "application/json"})
    assert_error(response, 400, "bad_request")
    mocks["auth"].register.assert_not_called()


@pytest.mark.parametrize("data, content_type", [
    (b"email=a@b.c", "application/x-www-form-urlencoded"),
    (b'{"email": "a@b.c"}', "text/plain"),
    (b'["a", "b"]', "application/json"),
    (b"\xff\xfe", "application/json"),
    (b"", "application/json"),
])
def test_wrong_content_type_or_shape_is_400(api, data, content_type):
    base, _ = api
    response = requests.post(f"{base}/api/auth/login", data=data,
                             headers={"Content-Type": content_type})
    assert_error(response, 400, "bad_request")


def test_json_nested_too_deep_is_400_not_500(gateway):
    base, _ = gateway(MAX_BODY_BYTES=200_000)
    response = requests.post(f"{base}/api/auth/login", data=b"[" * 50_000 + b"]" * 50_000,
                             headers={"Content-Type": "application/json"})
    assert_error(response, 400, "bad_request")


def test_unknown_fields_and_wrong_types_are_400_naming_them(api):
    base, mocks = api
    body = assert_error(requests.post(f"{base}/api/auth/register", json={
        "email": "a@example.com", "password": "long enough pw", "name": "A",
        "is_admin": True}), 400, "validation_error")
    assert "is_admin" in body["fields"]
    body = assert_error(requests.post(f"{base}/api/courses/3/reviews", json={
        "rating": "5"}, headers=bearer(token_for(USER))), 400, "validation_error")
    assert "rating" in body["fields"]
    body = assert_error(requests.post(f"{base}/api/courses/3/reviews", json={
        "rating": 6}, headers=bearer(token_for(USER))), 400, "validation_error")
    assert "rating" in body["fields"]
    mocks["auth"].register.assert_not_called()
    mocks["review"].create_review.assert_not_called()


@pytest.mark.parametrize("query, field", [("page=0", "page"), ("per_page=101", "per_page"),
                                          ("page=abc", "page"), ("sort=title", "sort"),
                                          ("page=2&after=WzVd", "after"), ("after=", "after"),
                                          ("after=" + "A" * 201, "after")])
def test_bad_pagination_is_400(api, query, field):
    base, mocks = api
    body = assert_error(requests.get(f"{base}/api/courses?{query}"), 400, "validation_error")
    assert field in body["fields"]
    mocks["course"].list_courses.assert_not_called()


def test_pagination_is_passed_on(api):
    base, mocks = api
    mocks["course"].list_courses.return_value = {"items": [COURSE], "page": 2, "per_page": 5,
                                                 "total": 6, "next": "WzVd"}
    response = requests.get(f"{base}/api/courses?page=2&per_page=5")
    assert response.status_code == 200 and response.json()["total"] == 6
    assert response.json()["next"] == "WzVd"
    mocks["course"].list_courses.assert_called_once_with(2, 5)  # no after: any version answers


def test_a_cursor_is_passed_on_and_its_page_has_no_number(api):
    base, mocks = api
    mocks["course"].list_courses.return_value = {"items": [COURSE], "page": None, "per_page": 5,
                                                 "total": 6, "next": None}
    response = requests.get(f"{base}/api/courses?after=WzVd&per_page=5")
    assert response.status_code == 200
    assert (response.json()["page"], response.json()["next"]) == (None, None)
    mocks["course"].list_courses.assert_called_once_with(1, 5, after="WzVd")


def test_body_over_the_limit_is_413(api):
    base, mocks = api
    response = requests.post(f"{base}/api/auth/register", json={
        "email": "a@example.com", "password": "x" * 2000, "name": "A"})
    assert_error(response, 413, "payload_too_large")
    mocks["auth"].register.assert_not_called()


def test_chunked_body_over_the_limit_is_413(api):
    base, mocks = api
    chunks = iter([b'{"email": "a@example.com", "password": "', b"x" * 2000, b'"}'])
    response = requests.post(f"{base}/api/auth/login", data=chunks,
                             headers={"Content-Type": "application/json"})
    assert_error(response, 413, "payload_too_large")
    mocks["auth"].authenticate.assert_not_called()


@pytest.mark.parametrize("path", ["/api/courses/abc", "/api/courses/99999999999999999999",
                                  "/api/courses/0", "/api/courses/-1", "/api/nothing", "/"])
def test_unknown_resources_are_json_404(api, path):
    base, mocks = api
    assert_error(requests.get(f"{base}{path}"), 404, "not_found")
    mocks["course"].get_course.assert_not_called()


def test_wrong_method_is_json_405(api):
    base, _ = api
    response = requests.delete(f"{base}/api/courses")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"] and "GET" in response.headers["Allow"]


# -- failed logins (throttled by auth: tests/unit/test_auth.py, tests/security) ------------------

def test_login_passes_the_client_address_and_auths_429_on(api):
    base, mocks = api
    mocks["auth"].authenticate.return_value = USER
    assert requests.post(f"{base}/api/auth/login", json={
        "email": "ada@example.com", "password": "right"}).status_code == 200
    mocks["auth"].authenticate.assert_called_once_with("ada@example.com", "right", "127.0.0.1")
    mocks["auth"].authenticate.side_effect = TooManyRequests("too many failed logins",
                                                             retry_after=7.2)
    response = requests.post(f"{base}/api/auth/login", json={
        "email": "ada@example.com", "password": "right"})
    assert_error(response, 429, "too_many_requests")
    assert response.headers["Retry-After"] == "8"


def test_behind_trusted_proxies_the_forwarded_address_is_the_client(gateway):
    base, mocks = gateway(TRUSTED_PROXY_HOPS=1)
    mocks["auth"].authenticate.return_value = USER
    requests.post(f"{base}/api/auth/login", json={"email": "a@example.com", "password": "x"},
                  headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.9"})
    mocks["auth"].authenticate.assert_called_once_with("a@example.com", "x", "203.0.113.9")


# -- OpenAPI --------------------------------------------------------------------------------

def test_openapi_document_covers_every_route_and_the_error_schema(api):
    base, _ = api
    document = requests.get(f"{base}/api/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/api/auth/register", "/api/auth/login", "/api/users/me",
        "/api/users/me/notifications", "/api/courses", "/api/courses/{course_id}",
        "/api/courses/{course_id}/enroll", "/api/courses/{course_id}/reviews", "/health",
        "/api/openapi.json", "/api/asyncapi.json", "/api/events", "/api/analytics/summary"}
    error = document["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error", "message", "fields"}
    register = document["paths"]["/api/auth/register"]["post"]["responses"]
    assert {"201", "400", "409", "413"} <= set(register)
    assert register["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"}
    login = document["paths"]["/api/auth/login"]["post"]["responses"]
    assert "Retry-After" in login["429"]["headers"]
    assert document["components"]["schemas"]["RegisterRequest"]["additionalProperties"] is False
    json.dumps(document)


def test_the_event_contract_is_served_as_asyncapi(api):
    base, _ = api
    with open(os.path.join(ROOT, "docs", "asyncapi.json")) as checked_in:
        assert requests.get(f"{base}/api/asyncapi.json").json() == json.load(checked_in)


def test_a_service_error_during_login_is_not_a_failed_login(api):
    base, mocks = api
    mocks["auth"].authenticate.side_effect = ServiceUnavailable("auth did not answer")
    for _ in range(5):
        assert_error(requests.post(f"{base}/api/auth/login", json={
            "email": "ada@example.com", "password": "right"}), 503, "service_unavailable")
    mocks["auth"].authenticate.side_effect = None
    mocks["auth"].authenticate.return_value = USER
    assert requests.post(f"{base}/api/auth/login", json={
        "email": "ada@example.com", "password": "right"}).status_code == 200


# -- the event log, the summary, the dashboard -----------------------------------------------

LOGGED = {"id": 4, "event_id": "e" * 32, "event_type": "course.enrolled",
          "routing_key": "course.enrolled", "source": "course", "version": 1,
          "timestamp": "2026-11-26T10:00:00+00:00", "received_at": "2026-11-26T10:00:01+00:00",
          "data": {"enrollment_id": 1, "user_id": 7, "course_id": 3, "course_title": "Python"}}
SUMMARY = {"events_total": 3, "events_by_type": {"user.registered": 2, "course.created": 1},
           "registrations_per_day": [{"day": "2026-11-26", "count": 2}],
           "enrollments_per_course": [{"course_id": 3, "course_title": "Python", "count": 0}],
           "rating_distribution": {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0},
           "events_per_minute": [{"minute": "2026-11-26T10:00:00+00:00",
                                  "event_type": "user.registered", "count": 2}]}


def test_the_event_log_is_for_admins_only(api):
    base, mocks = api
    mocks["analytics"].list_events.return_value = {"items": [LOGGED], "page": 1, "per_page": 20,
                                                   "total": 1, "next": None}
    assert_error(requests.get(f"{base}/api/events"), 401, "unauthorized")
    for user in (USER, INSTRUCTOR):
        assert_error(requests.get(f"{base}/api/events", headers=bearer(token_for(user))),
                     403, "forbidden")
    mocks["analytics"].list_events.assert_not_called()
    response = requests.get(f"{base}/api/events", headers=bearer(token_for(ADMIN)))
    assert response.status_code == 200, response.text
    assert response.json() == {"items": [LOGGED], "page": 1, "per_page": 20, "total": 1,
                               "next": None}
    mocks["analytics"].list_events.assert_called_once_with(
        event_type=None, since=None, until=None, user_id=None, course_id=None, page=1,
        per_page=20)


def test_event_log_filters_are_passed_on_with_times_in_utc(api):
    base, mocks = api
    mocks["analytics"].list_events.return_value = {"items": [], "page": 2, "per_page": 5,
                                                   "total": 0}
    # "+01:00" typed unencoded in a URL arrives as " 01:00": read as the offset it was
    response = requests.get(
        f"{base}/api/events?type=course.enrolled&since=2026-11-26T10:00:00+01:00"
        "&until=2026-11-27T00:00:00Z&user_id=7&course_id=3&after=WzVd&per_page=5",
        headers=bearer(token_for(ADMIN)))
    assert response.status_code == 200, response.text
    mocks["analytics"].list_events.assert_called_once_with(
        event_type="course.enrolled", since="2026-11-26T09:00:00+00:00",
        until="2026-11-27T00:00:00+00:00", user_id=7, course_id=3, page=1, per_page=5,
        after="WzVd")


@pytest.mark.parametrize("params, fields", [
    ({"since": "yesterday", "page": "0"}, {"since", "page"}),
    ({"until": "2026-13-01T00:00:00Z"}, {"until"}),
    ({"since": "2026-11-26T10:00:00Z", "until": "2026-11-26T09:00:00Z"}, {"until"}),
    ({"since": "0001-01-01T00:00:00+01:00"}, {"since"}),  # no UTC equivalent
    ({"user_id": "abc", "course_id": "0"}, {"user_id", "course_id"}),
    ({"per_page": "101", "type": ""}, {"per_page", "type"}),
    ({"colour": "red"}, {"colour"}),
])
def test_bad_event_log_filters_are_400_naming_them(api, params, fields):
    base, mocks = api
    body = assert_error(requests.get(f"{base}/api/events", params=params,
                                     headers=bearer(token_for(ADMIN))), 400, "validation_error")
    assert set(body["fields"]) == fields
    mocks["analytics"].list_events.assert_not_called()


def test_analytics_errors_keep_their_status(api):
    base, mocks = api
    mocks["analytics"].list_events.side_effect = ValidationError(
        "invalid arguments", {"until": ["must not be before since"]})
    body = assert_error(requests.get(f"{base}/api/events", headers=bearer(token_for(ADMIN))),
                        400, "validation_error")
    assert body["fields"] == {"until": ["must not be before since"]}
    mocks["analytics"].summary.side_effect = ServiceUnavailable("analytics did not answer")
    assert_error(requests.get(f"{base}/api/analytics/summary"), 503, "service_unavailable")


def test_the_summary_is_public(api):
    base, mocks = api
    mocks["analytics"].summary.return_value = SUMMARY
    response = requests.get(f"{base}/api/analytics/summary")
    assert response.status_code == 200 and response.json() == SUMMARY


def test_the_dashboard_loads_nothing_from_elsewhere(api):
    base, _ = api
    page = requests.get(f"{base}/dashboard")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    for asset, content_type in (("dashboard.js", "text/javascript"),
                                ("dashboard.css", "text/css")):
        assert f'"/dashboard/{asset}"' in page.text
        response = requests.get(f"{base}/dashboard/{asset}")
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith(content_type)
        assert "http://" not in response.text and "https://" not in response.text
    assert "http://" not in page.text and "https://" not in page.text
    assert_error(requests.get(f"{base}/dashboard/other.js"), 404, "not_found")


def _live_events(container):
    from gateway.live import LiveFeed
    feed = next(ext for ext in container.extensions if isinstance(ext, LiveFeed))
    return feed.live_events


def test_open_streams_hold_no_worker_and_get_each_event_at_once(gateway):
    base, mocks = gateway(max_workers=1)
    live = _live_events(gateway.container)
    mocks["analytics"].summary.return_value = SUMMARY
    streams = [requests.get(f"{base}/api/events/stream", stream=True, timeout=5)
               for _ in range(2)]
    try:
        for response in streams:
            assert response.status_code == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
        # two open streams and one worker: the gateway still answers
        assert requests.get(f"{base}/api/analytics/summary", timeout=5).status_code == 200
        assert len(live.subscriptions) == 2
        view = {"event_id": "a" * 32, "event_type": "user.registered",
                "timestamp": "2026-11-26T10:00:00+00:00", "source": "auth",
                "data": {"user_id": 7}}
        live.publish(view)
        for response in streams:
            with eventlet.Timeout(2):  # not held back in a server-side buffer
                lines = response.iter_lines(decode_unicode=True)
                assert next(lines) == "retry: 2000"
                data = next(line for line in lines if line.startswith("data: "))
            assert json.loads(data[len("data: "):]) == view
    finally:
        for response in streams:
            response.close()


def test_streams_beyond_the_limit_are_503(gateway):
    base, _ = gateway(LIVE_MAX_STREAMS=1)
    first = requests.get(f"{base}/api/events/stream", stream=True, timeout=5)
    try:
        assert first.status_code == 200
        refused = requests.get(f"{base}/api/events/stream", timeout=5)
        body = assert_error(refused, 503, "too_many_streams")
        assert body["message"].startswith("too many open live streams")
        assert refused.headers["Retry-After"] == "10"
    finally:
        first.close()


def test_liveness_answers_without_the_broker_or_any_service(api):
    base, mocks = api  # no broker at all (port 1), every service a mock
    response = requests.get(f"{base}/health/live")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert all(not mock.mock_calls for mock in mocks.values())


# -- a token's user must exist --------------------------------------------------------------

def test_a_token_for_a_user_that_does_not_exist_is_401_everywhere(api):
    base, mocks = api
    ghost = dict(USER, id=99)
    mocks["auth"].get_user.side_effect = NotFound("user 99 does not exist")
    for method, path in (("POST", "/api/courses/3/enroll"), ("GET", "/api/users/me"),
                         ("GET", "/api/users/me/notifications")):
        assert_error(requests.request(method, base + path, headers=bearer(token_for(ghost))),
                     401, "unauthorized")
    response = requests.post(f"{base}/api/courses/3/reviews", json={"rating": 5},
                             headers=bearer(token_for(ghost)))
    assert_error(response, 401, "unauthorized")
    mocks["course"].enroll.assert_not_called()
    mocks["review"].create_review.assert_not_called()


def test_known_users_are_cached_not_asked_for_on_every_request(api):
    base, mocks = api
    mocks["course"].enroll.side_effect = Conflict("already enrolled in this course")
    for _ in range(5):
        response = requests.post(f"{base}/api/courses/3/enroll", headers=bearer(token_for(USER)))
        assert response.status_code == 409
    assert mocks["auth"].get_user.call_count == 1


def test_a_token_whose_role_is_out_of_date_is_401(api):
    base, mocks = api
    response = requests.post(f"{base}/api/courses", json={"title": "T", "description": "D"},
                             headers=bearer(token_for(dict(USER, role="instructor"))))
    assert_error(response, 401, "unauthorized")
    mocks["course"].create_course.assert_not_called()


def test_logins_take_turns_so_other_routes_keep_workers(gateway):
    base, mocks = gateway(LOGIN_MAX_CONCURRENT=2)
    running, most = [0], [0]

    def slow_refusal(email, password, client_address):
        running[0] += 1
        most[0] = max(most[0], running[0])
        eventlet.sleep(0.3)
        running[0] -= 1
        raise Unauthorized("invalid email or password")

    mocks["auth"].authenticate.side_effect = slow_refusal
    mocks["course"].list_courses.return_value = {"items": [], "page": 1, "per_page": 20,
                                                 "total": 0}
    pool = eventlet.GreenPool()
    logins = [pool.spawn(requests.post, f"{base}/api/auth/login",
                         json={"email": f"u{n}@example.com", "password": "x"})
              for n in range(12)]  # more than max_workers (10)
    eventlet.sleep(0.1)
    started = time.monotonic()
    assert requests.get(f"{base}/api/courses").status_code == 200
    assert time.monotonic() - started < 0.25  # served while the logins wait their turn
    assert [login.wait().status_code for login in logins] == [401] * 12  # none refused
    assert most[0] == 2


def test_a_login_that_waits_longer_than_rpc_timeout_for_its_turn_is_429(gateway):
    base, mocks = gateway(LOGIN_MAX_CONCURRENT=1, RPC_TIMEOUT=0.2)
    mocks["auth"].authenticate.side_effect = lambda *args: eventlet.sleep(0.6) or USER
    pool = eventlet.GreenPool()
    logins = [pool.spawn(requests.post, f"{base}/api/auth/login",
                         json={"email": "a@example.com", "password": "x"}) for _ in range(2)]
    statuses = sorted(login.wait().status_code for login in logins)
    assert statuses[1] == 429


def test_a_login_burst_beyond_the_expected_wait_is_told_to_come_back_at_once(gateway):
    # one login at a time, a turn of ~0.3 s: the second in line would wait 0.3 s (admitted),
    # the third 0.6 s, over LOGIN_MAX_WAIT (0.5): refused with a 503 before any login finished
    base, mocks = gateway(LOGIN_MAX_CONCURRENT=1, LOGIN_MAX_WAIT=0.5, RPC_TIMEOUT=5)
    mocks["auth"].authenticate.side_effect = lambda *args: eventlet.sleep(0.3) or USER
    first = requests.post(f"{base}/api/auth/login", json={"email": "a@example.com",
                                                          "password": "x"})
    assert first.status_code == 200  # and the gateway knows a login's cost now
    finished = []

    def login(n):
        response = requests.post(f"{base}/api/auth/login",
                                 json={"email": f"u{n}@example.com", "password": "x"})
        finished.append(response)
        return response

    pool = eventlet.GreenPool()
    logins = [pool.spawn(login, n) for n in range(6)]
    statuses = sorted(thread.wait().status_code for thread in logins)
    assert statuses == [200, 200, 503, 503, 503, 503]
    refused = [response for response in finished if response.status_code == 503]
    assert all(response.headers["Retry-After"] == "1" for response in refused)
    assert refused[0].json()["error"] == "service_unavailable"
    # every refusal was answered before the first admitted login came back
    assert [r.status_code for r in finished[:4]] == [503] * 4
