"""``knowledge-nest migrate-queues``: recreate a queue whose arguments differ from the
configuration (QUEUE_TYPE, EVENT_PRIORITY), keeping its messages.

The broker refuses to redeclare a queue with other arguments, so a service stops with the kit's
``QueueArgumentsMismatch`` (services/kit/topology.py) after such a change. This recreates each
queue of the topology the kit declares, shovel-free, moving its messages with moves.py.
"""
import amqp

from operations.moves import message_body, move_messages, no_progress
from services.kit.amqp import new_publisher
from services.kit.settings import AMQP_URI
from services.kit.topology import entity_bindings, subscription_entities
from services.kit.trust import broker_user, republished


def _queue_matches(connection, queue):
    """True if ``queue`` can be declared as configured (created if missing); False on a 406."""
    channel = connection.channel()
    try:
        queue(channel).declare()
        return True
    except amqp.exceptions.PreconditionFailed:
        return False
    finally:
        if channel.is_open:
            channel.close()


def _moved_unchanged(destination, own_user):
    """moves.move_messages' route: each message as it is, to ``destination``, as ``own_user``'s
    (RabbitMQ takes only the connection's own user as ``user_id``: trust.republished)."""
    def route(message):
        properties = dict(message.properties)
        headers = properties.pop("application_headers", None) or {}
        properties, headers = republished(properties, headers, own_user)
        return "", destination, amqp.Message(message_body(message),
                                             application_headers=headers, **properties)
    return route


def migrate_queue(connection, wanted, config, publisher, progress=no_progress):
    """Recreate the queue ``wanted`` (a kombu Queue made here) with its configured arguments,
    keeping its messages.

    Returns None when it already matches, else the number of messages carried over. Its
    consumers must be stopped. Shovel-free: the messages are parked in ``<queue>.migrating``
    (bound to the same keys while the queue is away, so no event published meanwhile is lost),
    each batch confirmed there before it is acked (moves.py), and moved back the same way. Run
    again after an interruption: a leftover ``.migrating`` queue is emptied into the new queue.
    """
    queue_name = wanted.name
    bindings = entity_bindings(wanted)
    own_user = broker_user(AMQP_URI.read(config))
    holding_name = queue_name + ".migrating"
    holding_exists = True
    probe = connection.channel()
    try:
        probe.queue_declare(holding_name, passive=True)
    except amqp.exceptions.NotFound:
        holding_exists = False
    finally:
        if probe.is_open:
            probe.close()
    if _queue_matches(connection, wanted) and not holding_exists:
        return None
    channel = connection.channel()
    try:
        # the holding queue is of the wanted type: on a cluster it must not live on one node
        channel.queue_declare(holding_name, durable=True, auto_delete=False,
                              arguments={key: value for key, value in
                                         (wanted.queue_arguments or {}).items()
                                         if key == "x-queue-type"})
        for exchange, key in bindings:
            channel.queue_bind(holding_name, exchange, routing_key=key)
        moved = 0
        try:
            channel.queue_declare(queue_name, passive=True)
            old_exists = True
        except amqp.exceptions.NotFound:
            old_exists = False
            channel = connection.channel()
        if old_exists and not _queue_matches(connection, wanted):
            for exchange, key in bindings:
                channel.queue_unbind(queue_name, exchange, routing_key=key)
            move_messages(connection, queue_name, publisher,
                          _moved_unchanged(holding_name, own_user), progress,
                          label=f"{queue_name} -> .migrating")
            channel.queue_delete(queue_name)
            # A new channel for the new queue: RabbitMQ 3.10's channel keeps the deleted
            # queue's type and crashes (541) publishing to a classic queue recreated as quorum.
            channel.close()
            channel = connection.channel()
            channel.confirm_select()
        wanted(channel).declare()  # with its bindings
        for exchange, key in bindings:
            channel.queue_unbind(holding_name, exchange, routing_key=key)
        moved += move_messages(connection, holding_name, publisher,
                               _moved_unchanged(queue_name, own_user), progress,
                               label=f"{queue_name} <- .migrating")
        # unbound and drained; quorum queues have no if-empty delete, so check first
        _, left, _ = channel.queue_declare(holding_name, passive=True)
        if not left:
            channel.queue_delete(holding_name)
        return moved
    finally:
        if channel.is_open:
            channel.close()


def migrate_queues(connection, config, subscriptions, progress=no_progress):
    """migrate_queue() for every queue of each subscription (its DLQ, its retry queues, its
    consumer queue); yields (queue_name, None or messages moved)."""
    publisher = new_publisher(config)
    try:
        for queue_name, binding_keys in subscriptions.items():
            for entity in subscription_entities(queue_name, tuple(binding_keys), config):
                yield entity.name, migrate_queue(connection, entity, config, publisher, progress)
    finally:
        publisher.close()
