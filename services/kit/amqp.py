"""A publisher with pipelined publisher confirms.

nameko's publisher (and py-amqp's ``confirm_publish`` option) waits for the broker's confirm of
each message before sending the next: one network round trip per event. The outbox relay sends a
whole batch and waits once for the confirms of all of it, which is several times faster and just
as safe: a batch counts as published only when every message in it was acked. It also sends the
next batch before waiting for the previous one's confirms (``publish_nowait`` / ``wait_for``),
so the broker is never idle while the relay reads or marks rows.
"""
import logging
import time
from contextlib import contextmanager

import amqp
from amqp import method_framing
from kombu import Connection

from services.kit.constants import CONTENT_ENCODING, CONTENT_TYPE

log = logging.getLogger(__name__)


class PublishFailed(Exception):
    """The broker nacked, returned or did not confirm a message in time: nothing was marked sent."""


def make_connection(amqp_uri, heartbeat, ssl=None, connect_timeout=5):
    return Connection(amqp_uri, heartbeat=heartbeat, ssl=ssl, connect_timeout=connect_timeout)


def event_message(body, event_id, event_type, source, headers=None, priority=None,
                  expiration=None, user_id=None):
    """An AMQP message carrying an event, with the properties docs/architecture.md lists;
    ``user_id``: the publishing connection's broker user, which RabbitMQ checks
    (services/kit/trust.py)."""
    properties = dict(
        content_type=CONTENT_TYPE,
        content_encoding=CONTENT_ENCODING,
        delivery_mode=2,  # persistent
        message_id=event_id,
        type=event_type,
        app_id=source,
        timestamp=int(time.time()),
        application_headers=dict(headers or {}),
    )
    if priority is not None:
        properties["priority"] = priority
    if expiration is not None:
        properties["expiration"] = str(expiration)
    if user_id is not None:
        properties["user_id"] = user_id
    return amqp.Message(body, **properties)


class _FrameBuffer:
    """A stand-in transport that keeps what py-amqp writes."""

    def __init__(self):
        self.data = bytearray()

    def write(self, frame):
        self.data += frame  # copies: py-amqp reuses the buffer it hands over


@contextmanager
def _one_write(connection):
    """The frames of every message published inside go to the socket in one write at the end.

    py-amqp writes each message with its own ``sendall``; under eventlet each is a green socket
    call, and for a batch of hundreds they, not the broker, set the pace.
    """
    frames = _FrameBuffer()
    real_writer = connection.frame_writer
    connection.frame_writer = method_framing.frame_writer(connection, frames)
    try:
        yield
    finally:
        connection.frame_writer = real_writer
    connection.transport.write(bytes(frames.data))


class ConfirmedPublisher:
    """Publishes batches on one channel in confirm mode, mandatory, and waits for every confirm.

    Not safe for concurrent use: callers that share one hold a lock around ``publish_batch``.
    The connection is opened lazily and reopened after any failure. It runs without heartbeats:
    nothing reads from it between batches to answer them, so the broker would close an idle one;
    a dead broker shows instead as a failed publish or a missing confirm (``confirm_timeout``).
    """

    def __init__(self, amqp_uri, confirm_timeout, ssl=None):
        self.amqp_uri = amqp_uri
        self.confirm_timeout = confirm_timeout
        self.ssl = ssl
        self._connection = None
        self._channel = None
        self._next_tag = 1
        self._pending = set()
        self._nacked = set()
        self._returned = []
        self._generation = 0

    def publish_batch(self, messages):
        """Publish ``[(exchange, routing_key, amqp.Message), ...]``; return once all are confirmed.

        Raises PublishFailed (or a connection error) if any is nacked or not confirmed within
        the timeout; the caller then treats the whole batch as unsent. Returns the messages the
        broker returned as unroutable (no queue bound to their routing key), as
        ``(reply_code, reply_text, exchange, routing_key)``: confirmed, but seen by nobody.
        """
        if not messages:
            return []
        for attempt in (1, 2):
            idle = not self._pending
            ticket = self.publish_nowait(messages)
            try:
                return self.wait_for(ticket)
            except (OSError, amqp.exceptions.ConnectionError,
                    amqp.exceptions.RecoverableConnectionError):
                # sent into a connection that had died while idle: one fresh try
                if attempt == 2 or not idle:
                    raise

    def publish_nowait(self, messages):
        """Publish a batch without waiting for its confirms; ``wait_for`` the returned ticket.

        Lets a caller publish the next batch while the broker is still confirming this one.
        Tickets are waited for in the order they were issued.
        """
        for attempt in (1, 2):
            idle = not self._pending  # nothing of an earlier batch would be lost by a reconnect
            try:
                channel = self._ensure_channel()
                first = self._next_tag
                with _one_write(self._connection.connection):
                    for exchange, routing_key, message in messages:
                        channel.basic_publish(message, exchange=exchange,
                                              routing_key=routing_key, mandatory=True)
                        self._pending.add(self._next_tag)
                        self._next_tag += 1
                return (self._generation, first, self._next_tag - 1)
            except (OSError, amqp.exceptions.ConnectionError,
                    amqp.exceptions.RecoverableConnectionError):
                self.close()
                # The connection may have died while idle (broker restart, closed by an
                # operator): one fresh try. Messages of the failed try that did arrive are
                # duplicates the consumers' inboxes absorb.
                if attempt == 2 or not idle:
                    raise
            except Exception:
                self.close()
                raise

    def wait_for(self, ticket):
        """Wait until every message of ``ticket`` (and of earlier ones) is confirmed.

        Returns what the broker returned as unroutable meanwhile; raises PublishFailed if one of
        the ticket's messages was nacked, not confirmed in time, or its connection was lost.
        """
        generation, first, last = ticket
        if generation != self._generation:
            raise PublishFailed("the connection was lost before the broker confirmed the batch")
        try:
            self._wait_for_confirms(last)
        except Exception:
            self.close()
            raise
        nacked = {tag for tag in self._nacked if first <= tag <= last}
        self._nacked -= nacked
        returned, self._returned = self._returned, []
        if nacked:
            raise PublishFailed(f"broker nacked {len(nacked)} message(s)")
        return returned

    def close(self):
        connection, self._connection, self._channel = self._connection, None, None
        self._pending.clear()
        self._nacked.clear()
        self._generation += 1  # tickets of this connection can no longer be confirmed
        if connection is not None:
            try:
                connection.release()
            except Exception:  # closing a broken connection; nothing to save
                log.debug("error closing publisher connection", exc_info=True)

    def _ensure_channel(self):
        if self._channel is None:
            self._connection = make_connection(self.amqp_uri, heartbeat=0, ssl=self.ssl)
            self._connection.ensure_connection(max_retries=1)
            channel = self._connection.connection.channel()  # py-amqp channel
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
            channel.events["basic_return"].add(self._on_return)
            channel.confirm_select()
            self._channel = channel
            self._next_tag = 1
            self._pending.clear()
        return self._channel

    def _wait_for_confirms(self, last):
        deadline = time.monotonic() + self.confirm_timeout
        while self._pending and min(self._pending) <= last:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishFailed(
                    f"{len(self._pending)} confirm(s) not received in {self.confirm_timeout}s")
            try:
                self._connection.connection.drain_events(timeout=remaining)
            except TimeoutError:
                continue

    def _settle(self, delivery_tag, multiple):
        if multiple:
            settled = {tag for tag in self._pending if tag <= delivery_tag}
        else:
            settled = {delivery_tag} & self._pending
        self._pending -= settled
        return settled

    def _on_ack(self, delivery_tag, multiple):
        self._settle(delivery_tag, multiple)

    def _on_nack(self, delivery_tag, multiple):
        self._nacked |= self._settle(delivery_tag, multiple)

    def _on_return(self, exc, exchange, routing_key, message):
        # py-amqp passes the reply code and text as an exception object
        self._returned.append((exc.reply_code, exc.reply_text, exchange, routing_key))
