"""Live events for the dashboard: every event, as it happens, to every open stream of this gateway.

    knowledge_nest_events --#--> [gateway.live.<uuid>]  (one per gateway process: exclusive,
                                  auto-delete, at most LIVE_QUEUE_LENGTH messages)
        --> LiveEvents (a greenthread consuming it) --> each open stream's buffer
            --> /api/events/stream (server-sent events) or /api/events/ws (WebSocket)

The two transports carry the same messages under the same limits: LIVE_MAX_STREAMS counts both,
each has a LIVE_BUFFER of events it may fall behind by, and both are served after the request's
worker returned (werkzeug calls the response), so an open stream holds a connection and a
greenthread, never one of the service's workers. A stream ends as soon as its client goes away
(it is watched for the hang-up, not only found out at the next write), and when the gateway
stops (WebSocket: close frame 1001, "going away").

Each gateway process has its own queue, so with several gateway instances behind a load balancer
every instance sees every event and any of them can serve a browser. The queue exists only while
someone watches: the first open stream starts the feed, which stops FEED_IDLE_SECONDS after the
last one closed. This is a display: no inbox, no acks (the broker forgets an event once it is
handed over), and a queue that vanishes with its feed. The durable record of events is the
analytics service's log.

What a stream shows of an event is ``public_view``: its type, time, source, id, and the fields
of its data that its contract (contracts/events.py) declares and does not mark personal: ids,
titles and ratings, never an email address or a person's name (``user.registered`` carries
both), because the dashboard and its stream are public, as is the summary they start from. Of an
event type without a contract it shows no data at all.
"""
import json
import logging
import socket
import time
import uuid

import eventlet
from eventlet.hubs import trampoline
from eventlet.queue import Empty, Full, LightQueue
from eventlet.websocket import WebSocketWSGI
from kombu import Connection, Queue
from nameko.extensions import DependencyProvider, SharedExtension

from werkzeug.wrappers import Response

from contracts import CONTRACTS
from gateway.http import TooManyStreams
from gateway.settings import LIVE_BUFFER, LIVE_MAX_STREAMS
from services.kit.amqp import connect_retries
from services.kit.envelope import InvalidEvent, parse_event
from services.kit.settings import AMQP_SSL, AMQP_URI
from services.kit.topology import events_exchange

log = logging.getLogger(__name__)

LIVE_QUEUE_LENGTH = 1000  # the broker drops the oldest beyond this if the gateway falls behind
HEARTBEAT_SECONDS = 15.0
RECONNECT_SECONDS = 1.0
BIND_WAIT_SECONDS = 5.0  # a new stream waits this long at most for a new feed's first attempt
FEED_IDLE_SECONDS = 30.0  # the feed stops this long after the last stream closed
RETRY_AFTER_SECONDS = 10  # told to a client refused for LIVE_MAX_STREAMS
SHUTDOWN_GRACE_SECONDS = 2.0  # stop() waits this long at most for streams to say goodbye
MISSED_PONGS = 2  # a WebSocket client that answers no ping for this many heartbeats is dropped
GOING_AWAY = 1001  # WebSocket close code: the server is shutting down

# What ends a stream, put in its subscription's buffer (never dropped from it)
CLIENT_GONE = "client-gone"
SHUTDOWN = "shutdown"


def public_view(body, message_id=None, app_id=None):
    """What the dashboard shows of an AMQP message, or None if it is not an event."""
    try:
        event = parse_event(body, message_id=message_id, app_id=app_id)
    except InvalidEvent:
        return None
    contract = CONTRACTS.get(event.event_type)
    # the contract's fields less its personal ones; of a type without a contract, nothing
    data = contract.public(event.data) if contract is not None else {}
    return {"event_id": event.event_id, "event_type": event.event_type,
            "timestamp": event.timestamp.isoformat(), "source": event.source, "data": data}


def sse_message(view, event_id=None, event="event"):
    """One server-sent event (text/event-stream) of type ``event`` carrying ``view`` as JSON."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(view, separators=(",", ":"), default=str))
    return "\n".join(lines) + "\n\n"


class Subscription:
    """One open stream's buffer: bounded; when full, the oldest event gives way to the newest."""

    def __init__(self, size):
        self.events = LightQueue(maxsize=size)
        self.dropped = 0
        self.ended = None  # CLIENT_GONE or SHUTDOWN once the stream must end

    def offer(self, view):
        while True:
            try:
                self.events.put_nowait(view)
                return
            except Full:
                try:
                    self.events.get_nowait()
                    self.dropped += 1
                except Empty:
                    pass

    def end(self, why):
        """End the stream (``CLIENT_GONE``, ``SHUTDOWN``): ``next`` returns ``why`` from now on."""
        if self.ended is None:
            self.ended = why
            self.offer(why)  # wakes a waiting next()

    def next(self, timeout):
        """The next event, None after ``timeout`` seconds without one, or why the stream ends."""
        if self.ended is not None:
            return self.ended
        try:
            view = self.events.get(timeout=timeout)
        except Empty:
            return None
        return self.ended if self.ended is not None else view


class LiveEvents(SharedExtension):
    """The gateway process's consumer of every event, fanning them out to open streams.

    It consumes only while someone watches: the first stream starts the feed (its queue is bound
    before that stream's response begins), and the feed stops ``FEED_IDLE_SECONDS`` after the
    last stream closed. A gateway nobody watches does not handle every event of the suite.
    """

    def __init__(self):
        super().__init__()
        self.subscriptions = set()
        self.queue_name = None      # gateway.live.<uuid>, new for each feed
        # sent once the current feed's first connection attempt is over: True when its queue is
        # bound, False when the broker could not be reached (it keeps trying)
        self.first_attempt = eventlet.Event()
        self._running = False       # between the container's start and stop
        self._feed = None           # the feed's greenthread, while it runs
        self._idle_since = time.monotonic()

    def setup(self):
        config = self.container.config
        self.amqp_uri = AMQP_URI.read(config)
        self.ssl = AMQP_SSL.read(config)
        self.buffer_size = LIVE_BUFFER.read(config)
        self.max_streams = LIVE_MAX_STREAMS.read(config)

    def start(self):
        self._running = True

    def stop(self):
        """End every open stream (WebSocket: close 1001), wait briefly for them to say so, and
        stop the feed."""
        self._running = False
        for subscription in list(self.subscriptions):
            subscription.end(SHUTDOWN)
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        while self.subscriptions and time.monotonic() < deadline:
            eventlet.sleep(0.05)
        if self._feed is not None:
            self._feed.kill()
            self._feed = None

    kill = stop

    def subscribe(self):
        """A new stream's subscription; starts the feed if it is not running.

        A new feed's first attempt to bind its queue is waited for (BIND_WAIT_SECONDS at most),
        so that what is published after the stream opened reaches it; with the broker away,
        the stream opens at once and shows events once the feed reconnects.
        """
        if len(self.subscriptions) >= self.max_streams:
            raise TooManyStreams(
                f"too many open live streams: this gateway serves {self.max_streams} already "
                f"(LIVE_MAX_STREAMS, server-sent events and WebSocket together); try again "
                f"later", retry_after=RETRY_AFTER_SECONDS)
        subscription = Subscription(self.buffer_size)
        self.subscriptions.add(subscription)
        self.start_feed()
        if self._feed is not None:
            self.first_attempt.wait(timeout=BIND_WAIT_SECONDS)
        return subscription

    def unsubscribe(self, subscription):
        self.subscriptions.discard(subscription)
        if not self.subscriptions:
            self._idle_since = time.monotonic()

    def start_feed(self):
        if self._feed is None and self._running:
            self.queue_name = f"gateway.live.{uuid.uuid4().hex}"
            self.first_attempt = eventlet.Event()
            self._feed = self.container.spawn_managed_thread(self._consume,
                                                             identifier="LiveEvents")

    def publish(self, view):
        for subscription in list(self.subscriptions):
            subscription.offer(view)

    def _on_message(self, message):
        properties = message.properties or {}
        view = public_view(message.body, message_id=properties.get("message_id"),
                           app_id=properties.get("app_id"))
        if view is not None:
            self.publish(view)

    def _unwatched(self, queue_name):
        """True once the feed of ``queue_name`` should end: no stream for FEED_IDLE_SECONDS.

        ``_feed`` is cleared here, with no greenthread switch before the feed returns, so a
        stream that opens from now on starts a new feed (with a new queue) instead of relying
        on this one. A feed that a newer one replaced ends too, touching nothing.
        """
        if queue_name != self.queue_name:
            return True
        if self.subscriptions or time.monotonic() - self._idle_since < FEED_IDLE_SECONDS:
            return False
        self._feed = None
        log.info("live events: no stream for %ss; %s stops", FEED_IDLE_SECONDS, self.queue_name)
        return True

    def _consume(self):
        queue_name, first_attempt = self.queue_name, self.first_attempt
        while self._running and not self._unwatched(queue_name):
            try:
                # each broker node tried once, then a failed attempt raises; this loop tries again
                with Connection(self.amqp_uri, ssl=self.ssl, heartbeat=30, connect_timeout=5,
                                transport_options={"max_retries": connect_retries(
                                    self.amqp_uri), "client_properties": {
                                    "connection_name": queue_name}}) as connection:
                    queue = Queue(queue_name, exchange=events_exchange(), routing_key="#",
                                  exclusive=True, auto_delete=True, durable=False,
                                  queue_arguments={"x-max-length": LIVE_QUEUE_LENGTH})
                    with connection.Consumer(queue, on_message=self._on_message, no_ack=True):
                        if not first_attempt.ready():
                            first_attempt.send(True)
                        log.info("live events: consuming %s", queue_name)
                        while self._running:
                            try:
                                connection.drain_events(timeout=1)
                            except TimeoutError:
                                pass
                            # after every drain, not only when idle: under a steady stream of
                            # events a drain never times out, and a client that sends no
                            # heartbeat is cut off by the broker after two intervals
                            connection.heartbeat_check()
                            if self._unwatched(queue_name):
                                return
            except Exception as exc:  # broker away: try again, the dashboard just goes quiet
                if not first_attempt.ready():
                    first_attempt.send(False)
                if self._running:
                    log.warning("live events: %s: %s; reconnecting in %ss", type(exc).__name__,
                                exc, RECONNECT_SECONDS)
                    eventlet.sleep(RECONNECT_SECONDS)


class LiveFeed(DependencyProvider):
    """``self.live``: the process's LiveEvents (subscribe/unsubscribe)."""
    live_events = LiveEvents()

    def get_dependency(self, worker_ctx):
        return self.live_events


def client_socket(environ):
    """The connection's socket under eventlet's WSGI server, else None."""
    reader = environ.get("eventlet.input") if environ else None
    return reader.get_socket() if reader is not None else None


def watch_for_hang_up(sock, subscription):
    """A greenthread that ends ``subscription`` as soon as the client closes its connection.

    A server-sent events client sends nothing after its request, so the socket turns readable
    only when the client is gone (EOF, or a reset). Without this a closed stream would be
    found out only by a failing write, a heartbeat later (and TCP retries after that).
    """
    def watch():
        try:
            trampoline(sock, read=True)
            if sock.recv(1, socket.MSG_PEEK):
                return  # it sent something (a pipelined request): the next write will tell
        except Exception:  # reset, or closed on our side: gone either way
            pass
        subscription.end(CLIENT_GONE)
    return eventlet.spawn(watch)


class StreamBody:
    """The body of a text/event-stream response: events as they come, a comment when idle.

    werkzeug iterates it after the worker has returned, and closes it when the response ends
    (the stream ended, the client went away, or a HEAD request that never iterated it): the
    subscription is released then, whatever happened.
    """

    def __init__(self, live, subscription, heartbeat=None, environ=None):
        self.live, self.subscription = live, subscription
        heartbeat = heartbeat or HEARTBEAT_SECONDS
        sock = client_socket(environ)
        self.watcher = watch_for_hang_up(sock, subscription) if sock is not None else None
        self.events = self._events(heartbeat)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.events)

    def close(self):
        self.events.close()
        if self.watcher is not None:
            self.watcher.kill()
        self.live.unsubscribe(self.subscription)

    def _events(self, heartbeat):
        subscription = self.subscription
        sequence = 0
        reported = 0  # events dropped from this stream's buffer that the client was told about
        yield "retry: 2000\n\n"  # the browser reconnects after 2 s if the stream breaks
        while True:
            view = subscription.next(timeout=heartbeat)
            if view in (CLIENT_GONE, SHUTDOWN):
                return
            if subscription.dropped > reported:  # the client fell behind: say how far
                reported = subscription.dropped
                yield sse_message({"dropped": reported}, event="dropped")
            if view is None:
                yield f": alive, {subscription.dropped} dropped\n\n"
                continue
            sequence += 1
            yield sse_message(view, sequence)



def ws_message(view, sequence=None, kind="event"):
    """One WebSocket text message: the SSE stream's event, as JSON with its type and id."""
    if kind == "event":
        message = {"type": "event", "id": sequence, "event": view}
    else:
        message = dict(view, type=kind)
    return json.dumps(message, separators=(",", ":"), default=str)


class WebSocketStream(Response):
    """The answer to ``GET /api/events/ws``: the live feed over WebSocket (RFC 6455).

    A werkzeug Response for nameko, but calling it (which JsonWsgiApp does after the worker
    returned, in the connection's greenthread) performs the handshake with eventlet's
    WebSocketWSGI and serves the feed until the client or the gateway ends it. The messages are
    the SSE stream's, as JSON: ``{"type": "event", "id": n, "event": <public view>}`` and
    ``{"type": "dropped", "dropped": n}``. When idle the server sends a ping every heartbeat;
    a client that answers none for MISSED_PONGS heartbeats is dropped. On shutdown: close 1001.
    """

    def __init__(self, live, subscription, heartbeat=None):
        super().__init__(status=101)
        self.live, self.subscription = live, subscription
        self.heartbeat = heartbeat or HEARTBEAT_SECONDS

    def __call__(self, environ, start_response):
        try:
            return WebSocketWSGI(self.serve)(environ, start_response)
        finally:  # also when the handshake failed and serve() never ran
            self.live.unsubscribe(self.subscription)

    def serve(self, ws):
        ws.socket.settimeout(None)  # liveness is ping/pong's business, not a read timeout's
        last_pong = [time.monotonic()]
        handle_control_frame = ws._handle_control_frame

        # eventlet's RFC6455WebSocket answers pings and ignores pongs; WebSocketWSGI makes it
        # itself, so its frame handler is wrapped on this instance to note each pong
        def on_control_frame(opcode, data):
            if opcode == 0xA:
                last_pong[0] = time.monotonic()
            return handle_control_frame(opcode, data)
        ws._handle_control_frame = on_control_frame

        def read():  # the client has nothing to say; this notices when it goes
            try:
                while ws.wait() is not None:
                    pass
            except Exception:
                pass
            self.subscription.end(CLIENT_GONE)
        reader = eventlet.spawn(read)
        subscription, sequence, reported = self.subscription, 0, 0
        try:
            while True:
                view = subscription.next(timeout=self.heartbeat)
                if view == CLIENT_GONE:
                    return
                if view == SHUTDOWN:
                    ws.close(close_data=(GOING_AWAY, "the gateway is shutting down"))
                    return
                with eventlet.Timeout(self.heartbeat * MISSED_PONGS):  # a client that reads
                    if subscription.dropped > reported:                # nothing is dropped
                        reported = subscription.dropped
                        ws.send(ws_message({"dropped": reported}, kind="dropped"))
                    if view is None:
                        if time.monotonic() - last_pong[0] > self.heartbeat * (MISSED_PONGS + 1):
                            ws.close(close_data=(GOING_AWAY, "no pong"))
                            return
                        ws.send(b"", control_code=0x9)  # ping
                        continue
                    sequence += 1
                    ws.send(ws_message(view, sequence))
        except (OSError, eventlet.Timeout):
            return  # the client is gone or stuck; the connection closes
        finally:
            reader.kill()  # (__call__ releases the subscription)
