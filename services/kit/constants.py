"""Names shared by every service: the broker topology and the message headers."""
from services.kit.settings import (
    HEARTBEAT, OUTBOX_BATCH_SIZE, OUTBOX_POLL_INTERVAL, PREFETCH_COUNT, PUBLISH_CONFIRM_TIMEOUT,
)

# The one durable topic exchange every event is published to, routing key = event type.
EVENTS_EXCHANGE = "knowledge_nest_events"
# Direct exchange: a consumer queue's parked messages go to "<queue>.dlq", routing key "<queue>".
DEAD_LETTER_EXCHANGE = "knowledge_nest_events.dlx"
DEAD_LETTER_SUFFIX = ".dlq"
RETRY_SUFFIX = ".retry"

# nameko's shell dispatches to "<service>.events" (``n.dispatch_event(service, type, body)``).
# These exchanges are bound to EVENTS_EXCHANGE so an event dispatched from the shell reaches
# the same handlers.
SHELL_EVENT_EXCHANGES = ("knowledge_nest.events", "auth.events", "course.events", "review.events")

ENVELOPE_VERSION = 1
CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"

# Headers we put on a message we retry or park.
HEADER_ATTEMPTS = "x-attempts"
HEADER_REASON = "x-dead-letter-reason"
HEADER_EXCEPTION = "x-exception-type"
HEADER_ORIGINAL_ROUTING_KEY = "x-original-routing-key"
HEADER_ORIGINAL_QUEUE = "x-original-queue"
HEADER_FAILED_AT = "x-failed-at"
# Set by `knowledge-nest replay`: the consumer checks its inbox before running the handler.
HEADER_REPLAYED = "x-replayed"

# Per event type, a priority of at most this (consumer queues are declared with x-max-priority).
MAX_PRIORITY = 9

# The config keys and defaults services/kit/events.py still imports under these names; config
# is read through services/kit/settings.py (issue 17: events.py moves to it after the split).
PREFETCH_COUNT_CONFIG_KEY = PREFETCH_COUNT.key
OUTBOX_POLL_INTERVAL_CONFIG_KEY = OUTBOX_POLL_INTERVAL.key
DEFAULT_OUTBOX_POLL_INTERVAL = OUTBOX_POLL_INTERVAL.default
OUTBOX_BATCH_SIZE_CONFIG_KEY = OUTBOX_BATCH_SIZE.key
DEFAULT_OUTBOX_BATCH_SIZE = OUTBOX_BATCH_SIZE.default
CONFIRM_TIMEOUT_CONFIG_KEY = PUBLISH_CONFIRM_TIMEOUT.key
DEFAULT_CONFIRM_TIMEOUT = PUBLISH_CONFIRM_TIMEOUT.default
DEFAULT_HEARTBEAT = HEARTBEAT.default
