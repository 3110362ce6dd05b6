"""The broker topology: exchanges, every subscription's queue, its retry queues and its DLQ.

Every service declares the whole topology when it starts, so the queue of each subscription exists
before the first event is published: an event dispatched while its consumer has never run yet is
waiting in that consumer's queue when it starts (nameko publishes without ``mandatory``, and an
event with no bound queue would vanish).

SUBSCRIPTIONS is the routing contract: one line per event handler, ``"<service>.<method>"`` (the
queue's name) to the binding keys it listens to. A handler that is not listed here still works (it
declares its own queue when it starts), but events published before its first start are lost to it.

    knowledge_nest_events (topic) --user.registered--> [notification.send_welcome]
                                  --review.created---> [course.update_rating]
                                  ...
    a failed message  --> [<queue>.retry.<ms>ms] --(TTL expires)--> back to [<queue>]
    after the last try --> knowledge_nest_events.dlx (direct) --<queue>--> [<queue>.dlq]
"""
from kombu import Exchange, Queue, binding

from services.kit.constants import (
    DEAD_LETTER_EXCHANGE, DEAD_LETTER_SUFFIX, DEFAULT_RETRY_DELAYS, EVENTS_EXCHANGE,
    RETRY_DELAYS_CONFIG_KEY, RETRY_SUFFIX, SHELL_EVENT_EXCHANGES,
)

SUBSCRIPTIONS = {
    "course.update_rating": ("review.created",),
    "notification.send_welcome": ("user.registered",),
    "notification.announce_course": ("course.created",),
    "notification.confirm_enrollment": ("course.enrolled",),
    "notification.notify_instructor_of_review": ("review.created",),
}


def events_exchange():
    return Exchange(EVENTS_EXCHANGE, type="topic", durable=True, delivery_mode=2)


def dead_letter_exchange():
    return Exchange(DEAD_LETTER_EXCHANGE, type="direct", durable=True, delivery_mode=2)


def retry_delays(config):
    """The configured delays (seconds) before each retry of a failing handler."""
    delays = config.get(RETRY_DELAYS_CONFIG_KEY, DEFAULT_RETRY_DELAYS)
    if isinstance(delays, str):  # "1,5,30" from an environment variable
        delays = [part for part in delays.split(",") if part.strip()]
    return tuple(float(delay) for delay in delays)


def dead_letter_queue_name(queue_name):
    return queue_name + DEAD_LETTER_SUFFIX


def retry_queue_name(queue_name, delay):
    # The delay is in the name: a queue's TTL cannot change once declared, a new name can.
    return f"{queue_name}{RETRY_SUFFIX}.{int(delay * 1000)}ms"


def consumer_queue(queue_name, binding_keys):
    """The durable queue of one subscription, dead-lettering to its DLQ."""
    exchange = events_exchange()
    return Queue(
        queue_name,
        bindings=[binding(exchange, routing_key=key) for key in binding_keys],
        durable=True,
        queue_arguments={
            # what the broker itself rejects or expires goes to the DLQ too, never nowhere
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": queue_name,
        },
    )


def dead_letter_queue(queue_name):
    return Queue(dead_letter_queue_name(queue_name), exchange=dead_letter_exchange(),
                 routing_key=queue_name, durable=True)


def retry_queue(queue_name, delay):
    """Holds a failed message for ``delay`` seconds, then dead-letters it back to its queue."""
    return Queue(
        retry_queue_name(queue_name, delay),
        durable=True,
        queue_arguments={
            "x-message-ttl": int(delay * 1000),
            "x-dead-letter-exchange": "",  # the default exchange routes by queue name
            "x-dead-letter-routing-key": queue_name,
        },
    )


def subscription_entities(queue_name, binding_keys, config):
    """Everything one subscription needs on the broker, in declaration order."""
    yield dead_letter_queue(queue_name)
    for delay in retry_delays(config):
        yield retry_queue(queue_name, delay)
    yield consumer_queue(queue_name, binding_keys)


def declare_topology(connection, config, subscriptions=None):
    """Declare the exchanges and every subscription's queues. Idempotent."""
    subscriptions = SUBSCRIPTIONS if subscriptions is None else subscriptions
    channel = connection.channel()
    try:
        events = events_exchange()(channel)
        events.declare()
        dead_letter_exchange()(channel).declare()
        for name in SHELL_EVENT_EXCHANGES:
            shell_exchange = Exchange(name, type="topic", durable=True)(channel)
            shell_exchange.declare()
            # exchange-to-exchange binding: whatever reaches "<service>.events" reaches ours
            channel.exchange_bind(destination=events.name, source=name, routing_key="#")
        for queue_name, binding_keys in subscriptions.items():
            for entity in subscription_entities(queue_name, binding_keys, config):
                entity(channel).declare()
    finally:
        channel.close()
