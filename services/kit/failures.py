"""Where a message that failed goes: its retry queue, its DLQ, or back to the broker to dead-letter.

    handler failed on try n (x-attempts: n), tries left (EVENT_RETRY_DELAYS)
        --retry()--> "" exchange --> [<queue>.retry.<ms>ms] --TTL--> [<queue>]  (topology.py)
    handler failed its last try, or the message can never be handled (not an event, untrusted,
    older than the inbox remembers)
        --park()---> knowledge_nest_events.dlx --<queue>--> [<queue>.dlq]
    each copy: the body and the properties as they were, plus the headers below (why, when,
    which try, from which queue and routing key); the original is acked only once the broker
    confirmed the copy.
    neither could be published --reject()--> the broker dead-letters it to [<queue>.dlq] itself
"""
import logging
from datetime import datetime, timezone

import amqp
from eventlet.semaphore import Semaphore
from nameko.extensions import SharedExtension

from services.kit import topology
from services.kit.amqp import PublishFailed, new_publisher
from services.kit.constants import (
    DEAD_LETTER_EXCHANGE, HEADER_ATTEMPTS, HEADER_EXCEPTION, HEADER_FAILED_AT,
    HEADER_ORIGINAL_QUEUE, HEADER_ORIGINAL_ROUTING_KEY, HEADER_REASON,
)
from services.kit.trust import PublisherCheck, republished

log = logging.getLogger(__name__)

# AMQP properties a retried or parked message keeps (its body is never touched).
KEPT_PROPERTIES = ("content_type", "content_encoding", "message_id", "type", "app_id",
                   "timestamp", "priority", "correlation_id")


def attempts_before(message):
    """How many times the handler failed on this message before (its x-attempts header)."""
    return int((message.headers or {}).get(HEADER_ATTEMPTS, 0))


def failure_headers(message, queue_name, reason, exception, attempts):
    headers = message.headers or {}
    return {
        HEADER_ATTEMPTS: attempts,
        HEADER_REASON: reason,
        HEADER_EXCEPTION: exception,
        HEADER_ORIGINAL_ROUTING_KEY: headers.get(HEADER_ORIGINAL_ROUTING_KEY)
        or message.delivery_info.get("routing_key"),
        HEADER_ORIGINAL_QUEUE: queue_name,
        HEADER_FAILED_AT: datetime.now(timezone.utc).isoformat(),
    }


def reject(message, queue_name):
    """Last resort: the broker dead-letters it to the DLQ itself (x-death says why)."""
    if message.channel.connection:
        try:
            message.reject(requeue=False)
        except Exception:  # connection gone: the broker redelivers the message
            log.warning("could not reject a message on %s", queue_name, exc_info=True)


class FailureRouter(SharedExtension):
    """Sends a message that failed to its retry queue or parks it in its DLQ, confirmed."""

    def __init__(self):
        super().__init__()
        self.publisher = None
        self._lock = Semaphore()

    def setup(self):
        self.publisher = new_publisher(self.container.config)
        self.publishers = PublisherCheck(self.container.config)  # services/kit/trust.py

    def stop(self):
        if self.publisher is not None:
            self.publisher.close()

    kill = stop

    def retry(self, message, queue_name, delay, reason, exception, attempts):
        self._forward(message, "", topology.retry_queue_name(queue_name, delay),
                     failure_headers(message, queue_name, reason, exception, attempts))

    def park(self, message, queue_name, reason, exception, attempts):
        self._forward(message, DEAD_LETTER_EXCHANGE, queue_name,
                     failure_headers(message, queue_name, reason, exception, attempts))

    def _forward(self, message, exchange, routing_key, extra_headers):
        properties = {key: message.properties[key] for key in KEPT_PROPERTIES + ("user_id",)
                      if message.properties.get(key) is not None}
        headers = dict(message.headers or {})
        headers.update(extra_headers)
        # published as our own broker user; who published the event goes along in a header
        properties, headers = republished(properties, headers, self.publishers.own_user)
        copy = amqp.Message(message.body, delivery_mode=2, application_headers=headers,
                            **properties)
        with self._lock:
            unroutable = self.publisher.publish_batch([(exchange, routing_key, copy)])
        if unroutable:  # its retry queue or DLQ is missing: the caller rejects it instead
            raise PublishFailed(f"no queue bound to {exchange!r}/{routing_key!r}")
