"""Names and defaults shared by every service: the broker topology and the config keys."""

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

# Config keys (config.yml) and their defaults.
PREFETCH_COUNT_CONFIG_KEY = "PREFETCH_COUNT"
# The application's routing contract: {queue: [binding keys]}, or the import path
# "module:attribute" of one (config.yml: contracts.subscriptions:SUBSCRIPTIONS).
SUBSCRIPTIONS_CONFIG_KEY = "SUBSCRIPTIONS"
EXTRA_SUBSCRIPTIONS_CONFIG_KEY = "EXTRA_SUBSCRIPTIONS"  # {queue: [binding keys]} declared too
# More shell exchanges to bind (a list, or the import path of one, like SUBSCRIPTIONS').
SHELL_EVENT_EXCHANGES_CONFIG_KEY = "SHELL_EVENT_EXCHANGES"
RETRY_DELAYS_CONFIG_KEY = "EVENT_RETRY_DELAYS"  # seconds between tries of a failing handler
DEFAULT_RETRY_DELAYS = (1, 5, 30)
OUTBOX_POLL_INTERVAL_CONFIG_KEY = "OUTBOX_POLL_INTERVAL"  # seconds between sweeps for leftovers
DEFAULT_OUTBOX_POLL_INTERVAL = 2.0
OUTBOX_BATCH_SIZE_CONFIG_KEY = "OUTBOX_BATCH_SIZE"
DEFAULT_OUTBOX_BATCH_SIZE = 500
CONFIRM_TIMEOUT_CONFIG_KEY = "PUBLISH_CONFIRM_TIMEOUT"  # seconds to wait for the broker's confirms
DEFAULT_CONFIRM_TIMEOUT = 10.0
DEFAULT_HEARTBEAT = 15  # nameko's 60 s takes minutes to notice a dead broker
# Per event type: seconds an event may wait in a queue before it expires to the DLQ (null: never),
# and its priority 0-9 (consumer queues are declared with x-max-priority, classic queues only).
EVENT_TTL_CONFIG_KEY = "EVENT_TTL"
EVENT_PRIORITY_CONFIG_KEY = "EVENT_PRIORITY"
MAX_PRIORITY = 9
QUEUE_TYPE_CONFIG_KEY = "QUEUE_TYPE"  # classic or quorum: the subscriptions' consumer queues
QUEUE_TYPES = ("classic", "quorum")
# comma-separated host:port of every broker node; overrides RABBITMQ_HOST/RABBITMQ_PORT
BROKER_HOSTS_CONFIG_KEY = "RABBITMQ_HOSTS"
DEFAULT_QUEUE_TYPE = "classic"
