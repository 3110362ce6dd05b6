"""Names shared by every service: the broker topology and the message headers."""
# The one durable topic exchange every event is published to, routing key = event type.
EVENTS_EXCHANGE = "knowledge_nest_events"
# Direct exchange: a consumer queue's parked messages go to "<queue>.dlq", routing key "<queue>".
DEAD_LETTER_EXCHANGE = "knowledge_nest_events.dlx"
DEAD_LETTER_SUFFIX = ".dlq"
RETRY_SUFFIX = ".retry"

# nameko's shell dispatches to "<name>.events" (``n.dispatch_event(name, type, body)``). The
# kit binds this one, and those config's SHELL_EVENT_EXCHANGES names (the application's), to
# EVENTS_EXCHANGE, so an event dispatched from the shell reaches the same handlers.
SHELL_EVENT_EXCHANGE = "knowledge_nest.events"

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
