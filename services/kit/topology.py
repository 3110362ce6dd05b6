"""The broker topology: exchanges, every subscription's queue, its retry queues and its DLQ.

Every service declares the whole topology when it starts, so the queue of each subscription exists
before the first event is published: an event dispatched while its consumer has never run yet is
waiting in that consumer's queue when it starts (nameko publishes without ``mandatory``, and an
event with no bound queue would vanish).

The routing contract is the application's, not the kit's: config's ``SUBSCRIPTIONS`` (a mapping
``"<service>.<method>"`` (the queue's name) -> binding keys, or the import path of one; this
suite's is contracts/subscriptions.py), plus ``EXTRA_SUBSCRIPTIONS`` for consumers outside the code
base. A handler that is not listed still works (it declares its own queue when it starts), but
events published before its first start are lost to it.

    knowledge_nest_events (topic) --user.registered--> [notification.send_welcome]
                                  --review.created---> [course.update_rating]
                                  ...
    a failed message  --> [<queue>.retry.<ms>ms] --(TTL expires)--> back to [<queue>]
    after the last try --> knowledge_nest_events.dlx (direct) --<queue>--> [<queue>.dlq]

``Topology`` (a shared extension of the dispatcher and of every event handler) declares it
once per container, when the first of them is set up, and each handler's own queue with it.
"""
import time

import amqp
from eventlet.semaphore import Semaphore
from kombu import Exchange, Queue, binding
from nameko.extensions import SharedExtension

from services.kit.amqp import make_connection
from services.kit.constants import (
    DEAD_LETTER_EXCHANGE, DEAD_LETTER_SUFFIX, EVENTS_EXCHANGE, MAX_PRIORITY, RETRY_SUFFIX,
    SHELL_EVENT_EXCHANGE,
)
from services.kit.settings import (
    AMQP_SSL, AMQP_URI, EVENT_PRIORITY, EVENT_RETRY_DELAYS, EVENT_TTL, EXTRA_SUBSCRIPTIONS,
    HEARTBEAT, QUEUE_TYPE, SHELL_EVENT_EXCHANGES, SUBSCRIPTIONS,
)

MIGRATE_COMMAND = "knowledge-nest migrate-queues"
DECLARE_ATTEMPTS = 5


class QueueArgumentsMismatch(RuntimeError):
    """A queue exists on the broker with other arguments than the configuration asks for."""

    def __init__(self, queue_name, detail):
        super().__init__(
            f"queue {queue_name!r} already exists on the broker with other arguments than this "
            f"configuration declares (QUEUE_TYPE, EVENT_PRIORITY; the broker said: {detail}). "
            f"Stop its consumers and run `{MIGRATE_COMMAND}` to recreate it with its messages, "
            f"or set QUEUE_TYPE/EVENT_PRIORITY back to what the queue was declared with.")
        self.queue_name = queue_name

def configured_subscriptions(config):
    """{queue: binding keys} of config's SUBSCRIPTIONS and EXTRA_SUBSCRIPTIONS (see the top)."""
    wanted = {name: tuple(keys) for name, keys in SUBSCRIPTIONS.read(config).items()}
    wanted.update({name: tuple(keys) for name, keys in EXTRA_SUBSCRIPTIONS.read(config).items()})
    return wanted


def shell_event_exchanges(config):
    """The exchanges bound to ours for nameko's shell: the kit's and config's
    SHELL_EVENT_EXCHANGES (the application's; this suite's are contracts/subscriptions.py's)."""
    configured = SHELL_EVENT_EXCHANGES.read(config)
    return (SHELL_EVENT_EXCHANGE,) + tuple(name for name in configured
                                           if name != SHELL_EVENT_EXCHANGE)


def events_exchange():
    return Exchange(EVENTS_EXCHANGE, type="topic", durable=True, delivery_mode=2)


def dead_letter_exchange():
    return Exchange(DEAD_LETTER_EXCHANGE, type="direct", durable=True, delivery_mode=2)


def retry_delays(config):
    """The configured delays (seconds) before each retry of a failing handler."""
    return EVENT_RETRY_DELAYS.read(config)


def dead_letter_queue_name(queue_name):
    return queue_name + DEAD_LETTER_SUFFIX


def retry_queue_name(queue_name, delay):
    # The delay is in the name: a queue's TTL cannot change once declared, a new name can.
    return f"{queue_name}{RETRY_SUFFIX}.{int(delay * 1000)}ms"


def event_priorities(config):
    """{event_type: priority 0-9} from EVENT_PRIORITY; unlisted types get none (0)."""
    priorities = {}
    for event_type, value in EVENT_PRIORITY.read(config).items():
        if value is None:
            continue
        value = int(value)
        if not 0 <= value <= MAX_PRIORITY:
            raise ValueError(f"EVENT_PRIORITY of {event_type!r} must be 0-{MAX_PRIORITY}")
        priorities[event_type] = value
    return priorities


def event_ttls(config):
    """{event_type: milliseconds} from EVENT_TTL (seconds; null or absent: never expires)."""
    ttls = {}
    for event_type, seconds in EVENT_TTL.read(config).items():
        if seconds is None:
            continue
        if float(seconds) < 0:
            raise ValueError(f"EVENT_TTL of {event_type!r} must be >= 0 seconds or null")
        ttls[event_type] = int(float(seconds) * 1000)
    return ttls


def message_options(config):
    """``options(event_type)`` -> {"priority": p, "expiration": ms}, for event_message()."""
    priorities, ttls = event_priorities(config), event_ttls(config)

    def options(event_type):
        found = {}
        if event_type in priorities:
            found["priority"] = priorities[event_type]
        if event_type in ttls:
            found["expiration"] = str(ttls[event_type])
        return found

    return options


def consumer_queue_arguments(queue_name, config=None):
    arguments = {
        # what the broker itself rejects or expires goes to the DLQ too, never nowhere
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": queue_name,
    }
    if QUEUE_TYPE.read(config) == "quorum":
        # Quorum queues (RabbitMQ 3.10) have no x-max-priority.
        arguments.update(quorum_dead_letter_arguments())
    elif event_priorities(config):
        arguments["x-max-priority"] = MAX_PRIORITY
    return arguments


def replicated_arguments(config):
    """The queue arguments that make a queue of ours replicated when QUEUE_TYPE is quorum:
    every queue the suite consumes from must be, nameko's RPC queues too (services/kit/rpc.py).
    A classic queue lives on one node: while that node is down it cannot be consumed, and a
    copy of an event routed to it is dropped although the publisher gets its confirm."""
    return {"x-queue-type": "quorum"} if QUEUE_TYPE.read(config) == "quorum" else {}


def quorum_dead_letter_arguments():
    # A quorum queue dead-letters at most once unless at-least-once, which needs
    # reject-publish overflow.
    return {"x-queue-type": "quorum", "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish"}


def consumer_queue(queue_name, binding_keys, config=None):
    """The durable queue of one subscription, dead-lettering to its DLQ."""
    exchange = events_exchange()
    return Queue(
        queue_name,
        bindings=[binding(exchange, routing_key=key) for key in binding_keys],
        durable=True,
        queue_arguments=consumer_queue_arguments(queue_name, config),
    )


def dead_letter_queue(queue_name, config=None):
    return Queue(dead_letter_queue_name(queue_name), exchange=dead_letter_exchange(),
                 routing_key=queue_name, durable=True,
                 queue_arguments=replicated_arguments(config) or None)


def retry_queue(queue_name, delay, config=None):
    """Holds a failed message for ``delay`` seconds, then dead-letters it back to its queue."""
    arguments = {
        "x-message-ttl": int(delay * 1000),  # quorum queues have message TTLs since 3.10
        "x-dead-letter-exchange": "",  # the default exchange routes by queue name
        "x-dead-letter-routing-key": queue_name,
    }
    if QUEUE_TYPE.read(config) == "quorum":
        arguments.update(quorum_dead_letter_arguments())
    return Queue(retry_queue_name(queue_name, delay), durable=True, queue_arguments=arguments)


def subscription_entities(queue_name, binding_keys, config):
    """Everything one subscription needs on the broker, in declaration order."""
    yield dead_letter_queue(queue_name, config)
    for delay in EVENT_RETRY_DELAYS.read(config):
        yield retry_queue(queue_name, delay, config)
    yield consumer_queue(queue_name, binding_keys, config)


def entity_bindings(queue):
    """(exchange, routing key) of each binding of a queue made here; [] for a retry queue
    (the default exchange routes to it by name)."""
    if queue.bindings:
        return [(bound.exchange.name, bound.routing_key) for bound in queue.bindings]
    if queue.exchange is not None and queue.exchange.name:
        return [(queue.exchange.name, queue.routing_key)]
    return []


def declare_topology(connection, config, subscriptions=None):
    """Declare the exchanges and every subscription's queues (config's, unless given). Idempotent."""
    if subscriptions is None:
        subscriptions = configured_subscriptions(config)
    channel = connection.channel()
    try:
        events = events_exchange()(channel)
        events.declare()
        dead_letter_exchange()(channel).declare()
        for name in shell_event_exchanges(config):
            shell_exchange = Exchange(name, type="topic", durable=True)(channel)
            shell_exchange.declare()
            # exchange-to-exchange binding: whatever reaches "<service>.events" reaches ours
            channel.exchange_bind(destination=events.name, source=name, routing_key="#")
        for queue_name, binding_keys in subscriptions.items():
            for entity in subscription_entities(queue_name, binding_keys, config):
                declare_queue(channel, entity)
    finally:
        if channel.is_open:
            channel.close()


def declare_queue(channel, queue, attempts=DECLARE_ATTEMPTS):
    """Declare ``queue`` on ``channel``, again if it raced another declaration of it.

    Every service declares every subscription's queues when it starts, so services started
    together declare the same new queues at once; RabbitMQ may answer the loser with a 404
    ("home node ... of durable queue ... is down or inaccessible") while the winner's queue
    starts. That passes within moments. py-amqp reopens the channel the 404 closed.
    """
    for attempt in range(1, attempts + 1):
        try:
            queue(channel).declare()
            return
        except amqp.exceptions.PreconditionFailed as exc:
            # the broker closed the channel: 406, inequivalent arguments
            raise QueueArgumentsMismatch(queue.name, exc.reply_text) from None
        except amqp.exceptions.NotFound as exc:
            if "down or inaccessible" not in str(exc) or attempt == attempts:
                raise
            time.sleep(0.1 * attempt)


class Topology(SharedExtension):
    """Declares the broker topology (above) once per container, when it is set up."""

    def __init__(self):
        super().__init__()
        # here, not in setup(): the extensions that use it may be set up before it
        self._declared = None  # (queue, keys) declared so far; None: not even the exchanges
        self._lock = Semaphore()

    def declare(self, subscriptions=None):
        """Declare the exchanges and config's subscriptions' queues, plus ``subscriptions``.

        Config's are the application's routing contract (``SUBSCRIPTIONS``) and the queues of
        consumers outside this code base (``EXTRA_SUBSCRIPTIONS``: a plain AMQP client's, say),
        so that none of them misses an event published before it first ran.
        """
        wanted = configured_subscriptions(self.container.config)
        wanted.update(subscriptions or {})
        with self._lock:
            declared = self._declared or set()
            missing = {name: keys for name, keys in wanted.items()
                       if (name, tuple(keys)) not in declared}
            if not missing and self._declared is not None:
                return
            config = self.container.config
            with make_connection(AMQP_URI.read(config), HEARTBEAT.read(config),
                                 AMQP_SSL.read(config)) as connection:
                connection.ensure_connection(max_retries=3)
                declare_topology(connection, config, missing)
            self._declared = declared | {(name, tuple(keys)) for name, keys in missing.items()}
