"""The dead-letter queues: list, show, requeue and purge parked messages.

Used by ``knowledge-nest dlq ...``. ``list`` and ``show`` read with basic.get and ack nothing;
``requeue`` moves batches with pipelined confirms (moves.py): a message is removed from its DLQ
only after its requeued copy was confirmed by the broker, and messages a command does not select
go back where they were (the channel closes without acking them), so no command loses a
message.
"""
import json
from collections import Counter
from dataclasses import dataclass

import amqp

from services.kit import topology
from services.kit.amqp import new_publisher
from operations.moves import message_body, move_messages, no_progress, queue_length
from services.kit.constants import (
    DEAD_LETTER_SUFFIX, HEADER_ATTEMPTS, HEADER_EXCEPTION,
    HEADER_FAILED_AT, HEADER_ORIGINAL_QUEUE, HEADER_ORIGINAL_ROUTING_KEY, HEADER_REASON,
)
from services.kit.settings import AMQP_URI
from services.kit.trust import broker_user, republished

# Parked copies carry these; a requeued message starts afresh without them.
FAILURE_HEADERS = (HEADER_ATTEMPTS, HEADER_REASON, HEADER_EXCEPTION, HEADER_FAILED_AT,
                   HEADER_ORIGINAL_QUEUE, HEADER_ORIGINAL_ROUTING_KEY, "x-death",
                   "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
                   "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason")


@dataclass
class ParkedMessage:
    queue: str  # the DLQ
    delivery_tag: int
    body: bytes
    properties: dict
    headers: dict

    @classmethod
    def from_amqp(cls, queue, message):
        properties = dict(message.properties)
        return cls(queue=queue, delivery_tag=message.delivery_tag, body=message_body(message),
                   properties=properties,
                   headers=dict(properties.get("application_headers") or {}))

    @property
    def event_id(self):
        if self.properties.get("message_id"):
            return self.properties["message_id"]
        try:
            return json.loads(self.body).get("event_id")
        except (ValueError, AttributeError):
            return None

    @property
    def reason(self):
        """Ours if the kit parked it; the broker's (``expired``, ``rejected``) otherwise."""
        if HEADER_REASON in self.headers:
            return str(self.headers[HEADER_REASON])
        deaths = self.headers.get("x-death") or []
        if deaths:
            return str(deaths[0].get("reason"))
        return "unknown"

    @property
    def failed_at(self):
        return self.headers.get(HEADER_FAILED_AT)

    @property
    def origin_queue(self):
        return self.headers.get(HEADER_ORIGINAL_QUEUE) or self.queue[:-len(DEAD_LETTER_SUFFIX)]

    def describe(self):
        return {
            "queue": self.queue,
            "event_id": self.event_id,
            "event_type": self.properties.get("type"),
            "routing_key": self.headers.get(HEADER_ORIGINAL_ROUTING_KEY),
            "reason": self.reason,
            "attempts": self.headers.get(HEADER_ATTEMPTS),
            "failed_at": self.failed_at,
            "body": self.body.decode("utf-8", errors="replace"),
        }


def dead_letter_queues(config):
    return [topology.dead_letter_queue_name(name)
            for name in topology.configured_subscriptions(config)]


class DeadLetters:
    """A session with the broker for the dlq commands; use as a context manager."""

    def __init__(self, connection, config):
        self.connection = connection
        self.config = config

    def __enter__(self):
        self.connection.ensure_connection(max_retries=3)
        return self

    def __exit__(self, *exc_info):
        self.connection.release()

    def queues(self, only=None):
        names = dead_letter_queues(self.config)
        if only:
            wanted = {name if name.endswith(DEAD_LETTER_SUFFIX) else name + DEAD_LETTER_SUFFIX
                      for name in only}
            unknown = wanted - set(names)
            if unknown:
                raise ValueError(f"no such dead-letter queue: {', '.join(sorted(unknown))}")
            names = [name for name in names if name in wanted]
        return names

    def _channel(self):
        return self.connection.connection.channel()

    def count(self, queue):
        return queue_length(self.connection.connection, queue)

    def peek(self, queue, limit=1000):
        """Up to ``limit`` parked messages; all stay in the queue, in order."""
        channel = self._channel()
        try:
            return list(self._read(channel, queue, limit))
        finally:
            channel.close()  # unacked messages return to the queue

    def summary(self, queues=None, limit=1000):
        rows = []
        for queue in self.queues(queues):
            total = self.count(queue)
            messages = self.peek(queue, limit) if total else []
            failed = sorted(message.failed_at for message in messages if message.failed_at)
            rows.append({"queue": queue, "count": total,
                         "oldest": failed[0] if failed else None,
                         "reasons": Counter(message.reason for message in messages)})
        return rows

    def requeue(self, queues=None, event_ids=None, progress=no_progress):
        """Send parked messages back to their queue (all, or those with ``event_ids``)."""
        publisher = new_publisher(self.config)
        try:
            return sum(move_messages(self.connection.connection, queue, publisher,
                                     self._requeued(queue, event_ids,
                                                    broker_user(AMQP_URI.read(self.config))),
                                     progress,
                                     selective=bool(event_ids))
                       for queue in self.queues(queues))
        finally:
            publisher.close()

    @staticmethod
    def _requeued(queue, event_ids, own_user):
        """moves.move_messages' route: a parked message, without its failure headers, to the
        queue it was parked from (the default exchange routes by queue name), as ``own_user``'s
        copy (trust.republished)."""
        def route(raw):
            message = ParkedMessage.from_amqp(queue, raw)
            if event_ids and message.event_id not in event_ids:
                return None  # left unacked: back in the DLQ when the channel closes
            headers = {key: value for key, value in message.headers.items()
                       if key not in FAILURE_HEADERS}
            properties = {key: value for key, value in message.properties.items()
                          if key != "application_headers"}
            properties, headers = republished(properties, headers, own_user)
            return "", message.origin_queue, amqp.Message(message.body,
                                                          application_headers=headers,
                                                          **properties)
        return route

    def purge(self, queues=None):
        purged = 0
        for queue in self.queues(queues):
            channel = self._channel()
            try:
                purged += channel.queue_purge(queue) or 0
            except amqp.exceptions.NotFound:
                pass
            finally:
                if channel.is_open:
                    channel.close()
        return purged

    @staticmethod
    def _read(channel, queue, limit):
        for _ in range(limit):
            try:
                message = channel.basic_get(queue, no_ack=False)
            except amqp.exceptions.NotFound:
                return
            if message is None:
                return
            yield ParkedMessage.from_amqp(queue, message)
