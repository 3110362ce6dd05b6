"""Who may publish which event: the owner map, and the consumer-side check.

Every event type has one owning service: config's ``EVENT_OWNERS``, the application's table
(this suite's is ``OWNERS`` in contracts/events.py). Each service connects to RabbitMQ as
its own broker user; the kit publishes every event with the AMQP ``user_id`` property set to
that user, and RabbitMQ refuses a message whose ``user_id`` is not the connection's own user, so
``user_id`` says who published it. With ``EVENT_TRUST`` on, a consumer parks (DLQ, with the
reason) an event whose publisher is neither the broker user of the service that owns its type
(``EVENT_PUBLISHERS``: service -> broker user) nor one of ``EVENT_OPERATORS`` (users an operator
publishes seed-format events or replays with, any type).

A message the kit forwards (to a retry queue, or to a DLQ and back by ``knowledge-nest replay``)
is published by the forwarding connection, so it carries that user; the original publisher
travels in the ``x-original-user-id`` header, which counts only on a message whose ``user_id``
is the consumer's own service's user (nobody else can publish as that user).

Off by default: ``make run`` and the tests run every service as ``guest`` on one vhost, where a
check could not tell services apart. Compose and production turn it on (docs/operations.md,
"Broker users and trusted events"); scripts/broker_users.py creates the users.
"""
from urllib.parse import unquote, urlparse

from services.kit.settings import (
    AMQP_URI, EVENT_OPERATORS, EVENT_OWNERS, EVENT_PUBLISHERS, EVENT_TRUST,
)

HEADER_ORIGINAL_USER = "x-original-user-id"


class UntrustedPublisher(Exception):
    """The event's publisher is not allowed to publish its type."""


def broker_user(amqp_uri):
    """The user name in an AMQP URI (``guest`` when it names none, as kombu assumes)."""
    return unquote(urlparse(amqp_uri).username or "guest")


def republished(properties, headers, own_user):
    """(properties, headers) for a copy of a message that ``own_user``'s connection publishes
    again (retry, DLQ, requeue, queue migration): RabbitMQ takes only the connection's own user
    as ``user_id``; the event's publisher moves to ``x-original-user-id`` (kept if already
    there)."""
    properties, headers = dict(properties), dict(headers or {})
    original = properties.pop("user_id", None)
    if isinstance(original, bytes):
        original = original.decode("utf-8", "replace")
    if original is not None:
        headers.setdefault(HEADER_ORIGINAL_USER, original)
    properties["user_id"] = own_user
    return properties, headers


class PublisherCheck:
    """``check(event_type, properties, headers)``: UntrustedPublisher unless allowed."""

    def __init__(self, config):
        self.enabled = EVENT_TRUST.read(config)
        self.publishers = {service: str(user) for service, user in
                           EVENT_PUBLISHERS.read(config).items()}
        self.operators = set(EVENT_OPERATORS.read(config))
        self.own_user = broker_user(AMQP_URI.read(config))
        self.owners = EVENT_OWNERS.read(config)
        if self.enabled:
            missing = sorted(set(self.owners.values()) - set(self.publishers))
            if missing:
                raise ValueError(f"{EVENT_TRUST.key} is on but {EVENT_PUBLISHERS.key} names "
                                 f"no broker user for {', '.join(missing)}")

    def publisher(self, properties, headers):
        user = properties.get("user_id")
        if isinstance(user, bytes):
            user = user.decode("utf-8", "replace")
        if user == self.own_user and headers.get(HEADER_ORIGINAL_USER):
            return str(headers[HEADER_ORIGINAL_USER])  # forwarded by our own service
        return user

    def check(self, event_type, properties, headers):
        if not self.enabled:
            return
        user = self.publisher(properties, headers or {})
        owner = self.owners.get(event_type)
        if user is not None and user in self.operators:
            return
        if owner is None:
            raise UntrustedPublisher(f"event type {event_type!r} has no owning service")
        if user is None:
            raise UntrustedPublisher(f"{event_type} carries no user_id: its publisher is "
                                     f"unknown (owner: {owner})")
        if user != self.publishers.get(owner):
            raise UntrustedPublisher(f"{event_type} is published by {owner}; this one came "
                                     f"from broker user {user!r}")
