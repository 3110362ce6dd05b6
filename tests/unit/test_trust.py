"""Who may publish which event (services/kit/trust.py) and the broker users' permissions
(operations/broker_access.py, docker/rabbitmq/definitions.json)."""
import base64
import hashlib
import json
import os
import re

import pytest

from operations.broker_access import SERVICES, default_users, password_hash, permissions
from contracts import OWNERS as EVENT_OWNERS, SUBSCRIPTIONS
from services.kit.trust import PublisherCheck, UntrustedPublisher

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PUBLISHERS = {"auth": "u_auth", "course": "u_course", "review": "u_review"}


def check(own="u_course", **overrides):
    config = dict(AMQP_URI=f"pyamqp://{own}:pw@host:5672/", EVENT_TRUST=True,
                  EVENT_PUBLISHERS=PUBLISHERS, EVENT_OPERATORS="ops,seed",
                  EVENT_OWNERS="contracts.events:OWNERS")
    config.update(overrides)
    return PublisherCheck(config)


@pytest.mark.parametrize("event_type,user,headers,allowed", [
    ("review.created", "u_review", {}, True),
    ("review.created", "u_course", {}, False),            # another service
    ("review.created", None, {}, False),                  # no user_id: unknown publisher
    ("user.registered", "u_auth", {}, True),
    ("user.registered", "ops", {}, True),                 # an operator, any type
    ("review.created", b"seed", {}, True),
    ("made.up", "u_review", {}, False),                   # no owner
    # forwarded by our own service (retry): the original publisher counts
    ("review.created", "u_course", {"x-original-user-id": "u_review"}, True),
    ("review.created", "u_course", {"x-original-user-id": "u_auth"}, False),
    # the header counts only on a message our own user published
    ("review.created", "u_auth", {"x-original-user-id": "u_review"}, False),
])
def test_only_the_owner_or_an_operator_publishes_a_type(event_type, user, headers, allowed):
    properties = {"user_id": user} if user is not None else {}
    if allowed:
        check().check(event_type, properties, headers)
    else:
        with pytest.raises(UntrustedPublisher):
            check().check(event_type, properties, headers)


def test_off_by_default_and_a_missing_owner_user_is_a_setup_error():
    PublisherCheck({"AMQP_URI": "pyamqp://guest:guest@h/"}).check("review.created", {}, {})
    with pytest.raises(ValueError, match="review"):
        check(EVENT_PUBLISHERS={"auth": "a", "course": "c"})


def test_every_event_type_has_an_owner_that_publishes_it():
    bound = {key for keys in SUBSCRIPTIONS.values() for key in keys if key != "#"}
    assert bound <= set(EVENT_OWNERS)
    assert set(EVENT_OWNERS.values()) <= set(SERVICES)


@pytest.mark.parametrize("service,kind,name,allowed", [
    ("gateway", "write", "nameko-rpc", True),
    ("gateway", "write", "knowledge_nest_events", False),   # the gateway publishes no event
    ("gateway", "write", "amq.default", False),
    ("gateway", "configure", "rpc-auth", False),
    ("gateway", "read", "notification.send_welcome", False),
    ("auth", "configure", "rpc-auth", True),
    ("auth", "configure", "rpc-course", False),             # nobody else's RPC queue
    ("auth", "read", "rpc-course", False),
    ("course", "read", "rpc.reply-course-1234", True),
    ("course", "read", "rpc.reply-review-1234", False),      # nor their replies
    ("course", "write", "knowledge_nest_events", True),
    ("notification", "configure", "course.update_rating.retry.200ms", True),
])
def test_least_permissions(service, kind, name, allowed):
    assert bool(re.fullmatch(permissions(service)[kind], name)) is allowed


def test_the_compose_definitions_are_the_scripts():
    with open(os.path.join(ROOT, "docker", "rabbitmq", "definitions.json")) as file:
        document = json.load(file)
    users = default_users()
    granted = {grant["user"]: grant for grant in document["permissions"]}
    for service in SERVICES:
        grant = granted[users[service]]
        assert {key: grant[key] for key in ("configure", "write", "read")} == \
            permissions(service)


def test_password_hash_is_rabbitmqs_salted_sha256():
    salt = b"\x01\x02\x03\x04"
    decoded = base64.b64decode(password_hash("secret", salt))
    assert decoded == salt + hashlib.sha256(salt + b"secret").digest()


def test_a_republished_copy_is_ours_and_remembers_the_publisher():
    from services.kit.trust import republished
    properties, headers = republished({"user_id": "u_review", "type": "review.created"},
                                      {"x-attempts": 1}, "u_course")
    assert properties == {"user_id": "u_course", "type": "review.created"}
    assert headers == {"x-attempts": 1, "x-original-user-id": "u_review"}
    # forwarded again (a second retry): the first publisher is kept, and it still checks out
    properties, headers = republished(properties, headers, "u_course")
    assert headers["x-original-user-id"] == "u_review"
    check().check("review.created", properties, headers)
