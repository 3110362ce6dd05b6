"""Moving messages from one queue to another without losing any: ``dlq requeue`` and
``migrate-queues``.

The source is consumed (``basic.consume`` with a prefetch window, not one ``basic.get`` round
trip per message); each batch is published through the kit's ``ConfirmedPublisher`` (all of it
sent, then one wait for every confirm) and only then acked at the source. A message the broker
could not route, or a batch it did not confirm, is not acked: it goes back to its source when
the channel closes. Messages ``route`` leaves out (None) stay in the source the same way.
"""
import contextlib

import amqp

BATCH_SIZE = 200
IDLE_SECONDS = 2.0  # no delivery for this long: the source holds no more for us


class MoveFailed(Exception):
    """Some messages could not be moved; they are still in their source queue."""


@contextlib.contextmanager
def no_progress(label, total):
    """The progress factory of callers that show none: ``with progress(label, total) as bar:
    bar.update(n)`` (the CLI passes one that draws a bar or prints counts)."""
    class Silent:
        def update(self, count):
            pass
    yield Silent()


def message_body(message):
    body = message.body
    if isinstance(body, str):  # py-amqp decodes bodies that name a content_encoding
        body = body.encode(message.properties.get("content_encoding") or "utf-8")
    return bytes(body)


def queue_length(connection, queue):
    """Messages ready in ``queue``; 0 if it does not exist."""
    channel = connection.channel()
    try:
        return channel.queue_declare(queue, passive=True).message_count
    except amqp.exceptions.NotFound:
        return 0
    finally:
        if channel.is_open:
            channel.close()


def move_messages(connection, source, publisher, route, progress=no_progress, label=None,
                  batch_size=BATCH_SIZE, selective=False):
    """Move the messages now in ``source``; return how many were moved.

    ``connection`` is a py-amqp connection; ``route(message)`` returns ``(exchange, routing_key,
    amqp.Message)`` for a message to move, or None to leave it. ``selective``: ``route`` leaves
    some out, so the prefetch window is unbounded (unacked messages left out would fill a
    bounded one); the source's length at the start still bounds what is read.
    """
    total = queue_length(connection, source)
    if total == 0:
        return 0
    channel = connection.channel()
    received = []
    moved = seen = 0
    try:
        channel.basic_qos(0, 0 if selective else batch_size, False)
        channel.basic_consume(source, no_ack=False, callback=received.append)
        with progress(label or source, total) as bar:
            while seen < total:
                while len(received) < min(batch_size, total - seen):
                    try:
                        connection.drain_events(timeout=IDLE_SECONDS)
                    except TimeoutError:
                        break  # another consumer took some: move what came
                batch, received[:] = received[:total - seen], received[total - seen:]
                if not batch:
                    break
                seen += len(batch)
                moved += _move_batch(channel, publisher, route, batch)
                bar.update(len(batch))
    finally:
        if channel.is_open:
            channel.close()  # what was not acked returns to the source
    return moved


def _move_batch(channel, publisher, route, batch):
    outgoing, tags = [], []
    for message in batch:
        target = route(message)
        if target is not None:
            outgoing.append(target)
            tags.append(message.delivery_tag)
    returned = publisher.publish_batch(outgoing)  # all confirmed, or raises
    if returned:
        code, text, exchange, routing_key = returned[0]
        raise MoveFailed(f"{len(returned)} message(s) reached no queue ({code} {text}: "
                         f"exchange {exchange!r}, routing key {routing_key!r}); none of their "
                         f"batch was removed from its source")
    for tag in tags:
        channel.basic_ack(tag)
    return len(tags)
