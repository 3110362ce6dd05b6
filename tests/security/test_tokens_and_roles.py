"""Tokens name real users; instructors neither enroll in nor review their own courses."""
import time

import jwt
import pytest

from tests.e2e.conftest import JWT_SECRET
from tests.security.conftest import Bystander

pytestmark = pytest.mark.integration

PASSWORD = "a long passphrase 1"


def forged_but_signed(user_id, role="student"):
    now = int(time.time())
    return jwt.encode({"sub": str(user_id), "role": role, "iat": now, "exp": now + 600},
                      JWT_SECRET, algorithm="HS256")


def test_a_token_for_a_user_that_does_not_exist_is_401_everywhere(api):
    assert api.register("teach@example.com", PASSWORD, "T", "instructor").status_code == 201
    teacher = api.login("teach@example.com", PASSWORD)
    course = api.post("/api/courses", token=teacher,
                      json={"title": "C", "description": "D"}).json()
    ghost = forged_but_signed(4242)
    for method, path, body in (
            ("POST", f"/api/courses/{course['id']}/enroll", None),
            ("POST", f"/api/courses/{course['id']}/reviews", {"rating": 5}),
            ("GET", "/api/users/me", None),
            ("GET", "/api/users/me/notifications", None),
            ("POST", "/api/courses", {"title": "X", "description": "Y"})):
        token = ghost if path != "/api/courses" else forged_but_signed(4242, "instructor")
        response = api.request(method, path, token=token, json=body)
        assert response.status_code == 401, (path, response.text)
        assert response.json()["error"] == "unauthorized"
    after = api.get(f"/api/courses/{course['id']}").json()
    assert after["enrollment_count"] == 0 and after["rating_count"] == 0
    assert Bystander(api.base_url.removeprefix("http://")).get("/api/courses")[0] == 200


def test_instructors_cannot_enroll_in_or_review_their_own_course(api):
    assert api.register("teach@example.com", PASSWORD, "T", "instructor").status_code == 201
    teacher = api.login("teach@example.com", PASSWORD)
    course = api.post("/api/courses", token=teacher,
                      json={"title": "C", "description": "D"}).json()
    response = api.post(f"/api/courses/{course['id']}/enroll", token=teacher)
    assert response.status_code == 403 and "own course" in response.json()["message"]
    response = api.post(f"/api/courses/{course['id']}/reviews", token=teacher,
                        json={"rating": 5})
    assert response.status_code == 403 and "own course" in response.json()["message"]
    after = api.get(f"/api/courses/{course['id']}").json()
    assert after["enrollment_count"] == 0 and after["rating_count"] == 0
