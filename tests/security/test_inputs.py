"""Malformed input: every answer is a JSON 4xx naming what is wrong, never a 500 or a redirect."""
import json
import time

import jwt
import pytest

from tests.e2e.conftest import JWT_SECRET
from tests.security.conftest import Bystander, raw_connection, read_response

pytestmark = pytest.mark.integration

PASSWORD = "a long passphrase 1"


@pytest.fixture
def people(api):
    """An instructor with a course, and an enrolled student; tokens for both."""
    assert api.register("teach@example.com", PASSWORD, "Teacher", "instructor").status_code == 201
    assert api.register("learn@example.com", PASSWORD, "Learner").status_code == 201
    teacher = api.login("teach@example.com", PASSWORD)
    student = api.login("learn@example.com", PASSWORD)
    course = api.post("/api/courses", token=teacher,
                      json={"title": "Rust", "description": "ownership"}).json()
    assert api.post(f"/api/courses/{course['id']}/enroll", token=student).status_code == 201
    return {"teacher": teacher, "student": student, "course": course["id"]}


def post_raw_json(api, path, text, token=None):
    """POST ``text`` as it is (JSON escapes like \\ud800 survive, which requests' json= cannot)."""
    headers = {"Content-Type": "application/json"}
    return api.request("POST", path, token=token, data=text.encode("ascii"), headers=headers)


def assert_served(api):
    status, elapsed = Bystander(api.base_url.removeprefix("http://")).get("/api/courses")
    assert status == 200 and elapsed < 2


def assert_field_error(response, field, status=400):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert field in response.json()["fields"], response.json()


VALID = {
    "/api/auth/register": {"email": "x@example.com", "password": PASSWORD, "name": "X"},
    "/api/auth/login": {"email": "x@example.com", "password": PASSWORD},
    "/api/courses": {"title": "T", "description": "D"},
    "reviews": {"rating": 4, "comment": "fine"},
}
SURROGATE_CASES = [(path, field) for path, body in VALID.items() for field in body
                   if isinstance(body[field], str)] + [
    ("/api/auth/register", "role"), ("/api/auth/register", "\ud800")]


@pytest.mark.parametrize("path,field", SURROGATE_CASES)
def test_lone_surrogates_are_a_400_naming_the_field(api, people, path, field):
    token = None if path.startswith("/api/auth") else people["teacher" if path == "/api/courses"
                                                             else "student"]
    if path == "reviews":
        path = f"/api/courses/{people['course']}/reviews"
    body = dict(VALID.get(path, VALID["reviews"]))
    body[field] = "abc\ud800"
    text = json.dumps(body)  # ensure_ascii: the surrogate is written as \ud800
    response = post_raw_json(api, path, text, token)
    assert_field_error(response, field.encode("utf-8", "backslashreplace").decode())
    assert_served(api)


@pytest.mark.parametrize("path,field,value", [
    ("/api/auth/register", "name", "Eve\x00"),
    ("/api/auth/register", "name", "Eve\r\nBcc: all@example.com"),
    ("/api/auth/register", "email", "eve\x00@example.com"),
    ("/api/auth/login", "email", "eve\x07@example.com"),
    ("/api/courses", "title", "Title\nInjected: header"),
    ("/api/courses", "description", "nul \x00 inside"),
    ("reviews", "comment", "escape \x1b[31m red"),
])
def test_control_characters_are_refused(api, people, path, field, value):
    token = None if path.startswith("/api/auth") else people["teacher" if path == "/api/courses"
                                                             else "student"]
    if path == "reviews":
        path = f"/api/courses/{people['course']}/reviews"
    body = dict(VALID.get(path, VALID["reviews"]))
    body[field] = value
    response = api.post(path, json=body, token=token)
    assert_field_error(response, field)
    assert_served(api)


def test_tabs_and_newlines_stay_possible_in_texts(api, people):
    response = api.post("/api/courses", token=people["teacher"],
                        json={"title": "Go", "description": "line one\n\tline two\r\n"})
    assert response.status_code == 201, response.text
    response = api.post(f"/api/courses/{people['course']}/reviews", token=people["student"],
                        json={"rating": 5, "comment": "good\nreally"})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("written", ["0001", "\u00b2", "\u2460", "\u0661", "\uff11", "1 ",
                                     "+1", "4294967297", "2147483648"])
def test_ids_are_ascii_digits_only(api, people, written):
    assert people["course"] == 1
    for suffix in ("", "/reviews"):
        response = api.get(f"/api/courses/{written}{suffix}")
        assert response.status_code == 404, (written, response.text)
        assert response.json()["error"] == "not_found"
    assert api.get("/api/courses/1").status_code == 200
    response = api.get(f"/api/courses?page={written}")
    assert response.status_code == 400 and "page" in response.json()["fields"]


@pytest.mark.parametrize("sub", ["\u00b2", "\u2460", "\u0661", "0001", "01", "-1", "1.0", "",
                                 " 1"])
def test_token_subjects_are_ascii_digits_only(api, people, sub):
    now = int(time.time())
    token = jwt.encode({"sub": sub, "role": "student", "iat": now, "exp": now + 60},
                       JWT_SECRET, algorithm="HS256")
    for method, path in (("GET", "/api/users/me"), ("GET", "/api/users/me/notifications"),
                         ("POST", f"/api/courses/{people['course']}/enroll")):
        response = api.request(method, path, token=token)
        assert response.status_code == 401, (sub, path, response.text)
        assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize("path", ["//api/courses", "//evil.example.com/x", "/api//courses",
                                  "/api/courses/", "/health/"])
def test_no_redirect_is_built_from_the_host_header(api, path):
    address = api.base_url.removeprefix("http://")
    sock = raw_connection(address)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: evil.example.com\r\nConnection: close\r\n\r\n"
                 .encode())
    status, headers, body = read_response(sock)
    assert status == 404, (path, status, headers)
    assert "location" not in headers
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == "not_found"


@pytest.mark.parametrize("request_bytes,status", [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 70000 + b"\r\n\r\n", 400),
    (b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400),
    (b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
])
def test_errors_of_the_http_layer_are_json_too(api, request_bytes, status):
    sock = raw_connection(api.base_url.removeprefix("http://"))
    sock.sendall(request_bytes)
    answer_status, headers, body = read_response(sock)
    assert answer_status == status, (answer_status, body)
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]
    assert_served(api)


def test_the_token_response_is_not_cached(api, people):
    response = api.post("/api/auth/login",
                        json={"email": "learn@example.com", "password": PASSWORD})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"


def test_reviews_of_an_unknown_course_are_a_404(api, people):
    response = api.get("/api/courses/999/reviews")
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    # a real course without reviews is still an empty page
    other = api.post("/api/courses", token=people["teacher"],
                     json={"title": "Empty", "description": ""}).json()
    response = api.get(f"/api/courses/{other['id']}/reviews")
    assert response.status_code == 200 and response.json()["total"] == 0
