"""Each service on its own broker user with least permissions, EVENT_TRUST on: the story runs,
forged events are refused by the broker or parked by their consumer, operators' seed-format
events still count. Real RabbitMQ users on this test's vhost, deleted afterwards."""
import json
import uuid
from datetime import datetime, timezone
from urllib.parse import urlparse

import pika
import pika.exceptions
import pytest

from gateway.service import GatewayService
from services.analytics.service import AnalyticsService
from services.auth.service import AuthService
from services.course.service import CourseService
from operations.broker_access import ManagementApi, definitions, publishers
from services.notification.service import NotificationService
from services.review.service import ReviewService
from tests.e2e.conftest import Api
from tests.security.conftest import Bystander
from tests.support.broker import PlainClient, wait_until

pytestmark = pytest.mark.integration

CLASSES = {"auth": AuthService, "course": CourseService, "review": ReviewService,
           "notification": NotificationService, "analytics": AnalyticsService,
           "gateway": GatewayService}
PASSWORD = "a long passphrase 1"
MANAGEMENT = ("http://127.0.0.1:15672", "guest", "guest")


@pytest.fixture
def broker_users(rabbit_config):
    vhost = urlparse(rabbit_config["AMQP_URI"]).path[1:]
    prefix = f"kn_t15_{uuid.uuid4().hex[:8]}_"
    users = {service: prefix + service for service in CLASSES}
    passwords = {service: uuid.uuid4().hex for service in CLASSES}
    api = ManagementApi(*MANAGEMENT)
    api.apply(definitions(users, passwords, vhost))
    uris = {service: f"pyamqp://{users[service]}:{passwords[service]}@127.0.0.1:5672/{vhost}"
            for service in CLASSES}
    yield users, uris
    api.delete_users(users.values())


def review_created(course_id, user_id=99, rating=5):
    """The seed's format: event_type, timestamp, data."""
    return json.dumps({"event_type": "review.created",
                       "timestamp": datetime.now(timezone.utc).isoformat(),
                       "data": {"review_id": 1000 + user_id, "user_id": user_id,
                                "course_id": course_id, "rating": rating,
                                "has_comment": False}})


def publish_as(uri, body, user_id=None):
    """Publish with confirms, so that the broker's refusal raises here."""
    client = PlainClient(uri)
    try:
        client.channel.confirm_delivery()
        client.publish("review.created", body, properties=pika.BasicProperties(
            delivery_mode=2, user_id=user_id, content_type="application/json"))
    finally:
        client.close()


def test_services_on_their_own_users_and_forged_events(runner_factory, suite_config,
                                                       broker_users, rabbit_config):
    users, uris = broker_users
    base = suite_config(EVENT_TRUST=True, EVENT_PUBLISHERS=publishers(users),
                        EVENT_OPERATORS=["guest"])
    for service, cls in CLASSES.items():
        runner_factory(dict(base, AMQP_URI=uris[service]), cls).start()
    api = Api("http://" + base["WEB_SERVER_ADDRESS"])
    wait_until(lambda: api.get("/health").status_code == 200, timeout=60, message="suite")

    # the story, every service on its own user
    assert api.register("teach@example.com", PASSWORD, "T", "instructor").status_code == 201
    assert api.register("learn@example.com", PASSWORD, "L").status_code == 201
    teacher, student = (api.login("teach@example.com", PASSWORD),
                        api.login("learn@example.com", PASSWORD))
    course = api.post("/api/courses", token=teacher, json={"title": "C", "description": "D"})
    course_id = course.json()["id"]
    assert api.post(f"/api/courses/{course_id}/enroll", token=student).status_code == 201
    assert api.post(f"/api/courses/{course_id}/reviews", token=student,
                    json={"rating": 4}).status_code == 201
    rating = lambda: api.get(f"/api/courses/{course_id}").json()["rating_count"]  # noqa: E731
    wait_until(lambda: rating() == 1, timeout=30, message="the review counted")
    wait_until(lambda: api.get("/api/users/me/notifications", token=student).json()["total"]
               >= 2, timeout=30, message="the student's notifications")

    # the gateway's user may not publish events at all; nobody may claim another's user_id
    with pytest.raises(pika.exceptions.AMQPError):
        publish_as(uris["gateway"], review_created(course_id))
    with pytest.raises(pika.exceptions.AMQPError):
        publish_as(uris["course"], review_created(course_id), user_id=users["review"])

    # course's user can write to the events exchange: its review.created events are parked
    guest = PlainClient(rabbit_config["AMQP_URI"])
    publish_as(uris["course"], review_created(course_id, user_id=101), user_id=users["course"])
    publish_as(uris["notification"], review_created(course_id, user_id=102))  # no user_id
    wait_until(lambda: guest.message_count("course.update_rating.dlq") == 2, timeout=20,
               message="both forgeries parked")
    reasons = sorted(properties.headers["x-dead-letter-reason"]
                     for _, properties, _ in guest.get_all("course.update_rating.dlq"))
    assert "carries no user_id" in reasons[0] or "carries no user_id" in reasons[1]
    assert any(f"from broker user {users['course']!r}" in reason for reason in reasons)
    assert rating() == 1

    # an operator's own configured user publishes seed-format events, with its user_id
    publish_as(rabbit_config["AMQP_URI"], review_created(course_id, user_id=103, rating=2),
               user_id="guest")
    wait_until(lambda: rating() == 2, timeout=20, message="the operator's event counted")
    guest.close()
    status, elapsed = Bystander(base["WEB_SERVER_ADDRESS"]).get("/api/courses")
    assert status == 200 and elapsed < 2
