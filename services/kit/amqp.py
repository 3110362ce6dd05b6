"""A publisher with pipelined publisher confirms.

nameko's publisher (and py-amqp's ``confirm_publish`` option) waits for the broker's confirm of
each message before sending the next: one network round trip per event. The outbox relay sends a
whole batch and waits once for the confirms of all of it, which is several times faster and just
as safe: a batch counts as published only when every message in it was acked. It also sends the
next batch before waiting for the previous one's confirms (``publish_nowait`` / ``wait_for``),
so the broker is never idle while the relay reads or marks rows.

It is also the one place that knows a broker may be several nodes (``RABBITMQ_HOSTS``): the
``AMQP_URI`` is then kombu's failover form, one URL per node joined by ``;``, which every
connection of the suite (nameko's consumers and publishers, the relay, the gateway, the CLI)
tries in turn.
"""
import logging
import time
from contextlib import contextmanager
from urllib.parse import urlsplit

import amqp
from amqp import method_framing
from kombu import Connection
from nameko import messaging
from nameko.utils import sanitize_url

from services.kit.constants import CONTENT_ENCODING, CONTENT_TYPE
from services.kit.settings import AMQP_SSL, AMQP_URI, PUBLISH_CONFIRM_TIMEOUT, RABBITMQ_HOSTS

log = logging.getLogger(__name__)


class PublishFailed(Exception):
    """The broker nacked, returned or did not confirm a message in time: nothing was marked sent."""


def broker_urls(amqp_uri):
    """The URL of each node in ``amqp_uri`` (one, or kombu's ``;``-separated failover list)."""
    return [url for url in amqp_uri.split(";") if url.strip()]


def failover_uri(amqp_uri, hosts):
    """``amqp_uri`` (its first URL's scheme, credentials and vhost) once per ``host:port``."""
    first = urlsplit(broker_urls(amqp_uri)[0])
    credentials = first.netloc.rpartition("@")[0]
    return ";".join(first._replace(netloc=f"{credentials}@{host}" if credentials else host)
                    .geturl() for host in hosts)


def apply_broker_hosts(config):
    """With ``RABBITMQ_HOSTS`` set, make ``config``'s ``AMQP_URI`` the failover URI of those
    nodes (in place; idempotent). Called wherever config.yml is read: the kit's service
    container (every ``nameko run``) and ``load_config`` (the CLI, ``make run``)."""
    hosts = RABBITMQ_HOSTS.read(config)
    if hosts and config.get(AMQP_URI.key):
        config[AMQP_URI.key] = failover_uri(AMQP_URI.read(config), hosts)
    return config


def sanitize_uri(amqp_uri):
    """``amqp_uri`` with the password of every node's URL redacted (nameko's ``sanitize_url``
    redacts only the first of a failover list)."""
    return ";".join(sanitize_url(url) for url in broker_urls(amqp_uri))


def connect_retries(amqp_uri, rounds=1):
    """kombu's ``max_retries`` for trying every node ``rounds`` times.

    kombu counts a switch to the next node as a retry, so ``max_retries=1`` tries only two of
    three nodes; it sleeps only after a whole round.
    """
    return _max_retries(len(broker_urls(amqp_uri)), rounds)


def _max_retries(nodes, rounds):
    return nodes * rounds - 1


def connect(connection, rounds=1):
    """Open ``connection`` (a kombu Connection), each node tried ``rounds`` times."""
    nodes = len(connection.alt) or 1  # alt: every URL of a failover list, the first included
    return connection.ensure_connection(max_retries=_max_retries(nodes, rounds))


@contextmanager
def _connection_lost_ignored():
    """nameko ignores only py-amqp's ConnectionError when it acks: a socket reset under the ack
    (a broker node going away) raised out of the worker and killed the whole container. The
    broker requeues what the lost connection had not acked; inboxes absorb the redelivery."""
    try:
        yield
    except (OSError, amqp.exceptions.RecoverableConnectionError) as exc:
        log.warning("ack or requeue lost with the broker connection (%s); the broker "
                    "redelivers the message", exc)


class ConsumerConnection(Connection):
    """A consumer's kombu Connection, which never reconnects behind the consumer's back.

    kombu's ``connection`` property opens a new connection when it finds the old one dead, and
    py-amqp marks a connection dead as soon as one write on it fails: a worker's ack while the
    broker node goes away, before the consumer's own read has seen the socket close. The
    consumer's next ``drain_events`` then read from that new connection, which has no channel
    and no consumers: heartbeats kept it alive, no error was raised, and the service never
    consumed again (the fault matrix's H2: once in 27 rounds where it was found). Here that is
    a lost connection: the consumer reconnects, declares and consumes again, and the broker
    redelivers what the old connection had not acked.
    """

    @property
    def connection(self):  # read at every drain_events: one check of the connection
        if self._connection is None or self._closed:
            return super().connection  # the first connect, or closed on purpose
        if not self.connected:
            raise amqp.exceptions.RecoverableConnectionError(
                "connection to the broker lost (a write on it failed)")
        return self._connection


class QueueConsumer(messaging.QueueConsumer):
    """nameko's QueueConsumer, whose reconnect warning redacts every node's password, which goes
    round the broker's nodes every second or two while none answers, and whose connection
    never reconnects by itself (``ConsumerConnection``)."""

    def create_connection(self):
        # kombu's clone(), into the class that does not reconnect by itself
        return ConsumerConnection(**dict(self.connection._info(resolve=False)))

    def ack_message(self, message):
        with _connection_lost_ignored():
            super().ack_message(message)

    def requeue_message(self, message):
        with _connection_lost_ignored():
            super().requeue_message(message)

    @contextmanager
    def establish_connection(self):
        # kombu waits 2, 4, 6 ... 30 s between rounds: the longer the broker was away, the
        # later after its return it was found. A round every 1-2 s finds it within 2 s (the
        # fault matrix's H1: /health 200 1.7 s after the node was back).
        with self.create_connection() as connection:
            connection.ensure_connection(self.on_connection_error, self.connect_max_retries,
                                         interval_start=1, interval_step=1, interval_max=2)
            yield connection

    def on_connection_error(self, exc, interval):
        log.warning("Error connecting to broker at %s (%s). Retrying in %s seconds.",
                    sanitize_uri(self.amqp_uri), exc, interval)


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


def new_publisher(config):
    """The ConfirmedPublisher of ``config``'s broker (PUBLISH_CONFIRM_TIMEOUT, AMQP_SSL)."""
    return ConfirmedPublisher(AMQP_URI.read(config),
                              confirm_timeout=PUBLISH_CONFIRM_TIMEOUT.read(config),
                              ssl=AMQP_SSL.read(config))


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
                self._abandon()
                # The connection may have died while idle (broker restart, closed by an
                # operator): one fresh try. Messages of the failed try that did arrive are
                # duplicates the consumers' inboxes absorb.
                if attempt == 2 or not idle:
                    raise
            except Exception:
                self._abandon()
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
            self._abandon()
            raise
        nacked = {tag for tag in self._nacked if first <= tag <= last}
        self._nacked -= nacked
        returned, self._returned = self._returned, []
        if nacked:
            # A queue's leader was lost (a cluster node died): this channel may go on nacking
            # for seconds (8-9 s on RabbitMQ 3.10), a new one is fine within a fraction of one.
            self._abandon()
            raise PublishFailed(f"broker nacked {len(nacked)} message(s)")
        return returned

    def close(self):
        """Close the connection cleanly (the service stops)."""
        self._drop(graceful=True)

    def _abandon(self):
        """Drop the connection after a failure, without the closing handshake: with a majority
        of a cluster's nodes down a clean close blocks until one returns, and the caller (the
        relay, a consumer's failure router) must stay responsive. The next batch reconnects,
        trying each node in turn."""
        self._drop(graceful=False)

    def _drop(self, graceful):
        connection, self._connection, self._channel = self._connection, None, None
        self._pending.clear()
        self._nacked.clear()
        self._generation += 1  # tickets of this connection can no longer be confirmed
        if connection is not None:
            try:
                if graceful:
                    connection.release()
                else:
                    connection.collect()  # closes the socket, sends nothing
            except Exception:  # closing a broken connection; nothing to save
                log.debug("error closing publisher connection", exc_info=True)

    def _ensure_channel(self):
        if self._channel is None:
            self._connection = make_connection(self.amqp_uri, heartbeat=0, ssl=self.ssl)
            connect(self._connection, rounds=2)
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
