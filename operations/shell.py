"""Publish an event by hand, e.g. from ``nameko shell --config config.yml``::

    >>> from operations.shell import publish_event
    >>> publish_event(n.config, "user.registered",
    ...               {"user_id": 7, "email": "ada@example.com", "name": "Ada"})
    '4f0c...'   # the event_id

The event gets the full envelope, goes to ``knowledge_nest_events`` with publisher confirms, and
reaches the same handlers as one a service dispatched. (nameko's own ``n.dispatch_event`` works
too, through the "<service>.events" exchanges bound to ours: see the README.)
"""
import logging

from services.kit.amqp import event_message, make_connection
from services.kit.trust import broker_user
from services.kit.constants import EVENTS_EXCHANGE
from services.kit.envelope import new_event
from services.kit.amqp import new_publisher
from services.kit.settings import AMQP_SSL, AMQP_URI, HEARTBEAT
from services.kit.topology import declare_topology

log = logging.getLogger(__name__)


def declare(config):
    """Declare the exchanges and every subscription's queues (config's SUBSCRIPTIONS and
    EXTRA_SUBSCRIPTIONS)."""
    with make_connection(AMQP_URI.read(config), HEARTBEAT.read(config),
                         AMQP_SSL.read(config)) as connection:
        connection.ensure_connection(max_retries=3)
        declare_topology(connection, config)


def publish_event(config, event_type, data, source="shell"):
    """Publish one event, confirmed; return its event_id."""
    declare(config)
    event = new_event(event_type, data, source=source)
    publisher = new_publisher(config)
    try:
        unroutable = publisher.publish_batch([(EVENTS_EXCHANGE, event.event_type,
                                               event_message(event.to_json(), event.event_id,
                                                             event.event_type, source,
                                                             user_id=broker_user(
                                                                 AMQP_URI.read(config))))])
    finally:
        publisher.close()
    if unroutable:
        log.warning("no queue is bound to %r: nobody will see event %s", event_type,
                    event.event_id)
    return event.event_id
