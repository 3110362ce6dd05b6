"""Live events for the dashboard: every event, as it happens, to every open stream of this gateway.

    knowledge_nest_events --#--> [gateway.live.<uuid>]  (one per gateway process: exclusive,
                                  auto-delete, at most LIVE_QUEUE_LENGTH messages)
        --> LiveEvents (a greenthread consuming it) --> each open /api/events/stream's buffer

Each gateway process has its own queue, so with several gateway instances behind a load balancer
every instance sees every event and any of them can serve a browser. The queue exists only while
someone watches: the first open stream starts the feed, which stops FEED_IDLE_SECONDS after the
last one closed. This is a display: no inbox, no acks (the broker forgets an event once it is
handed over), and a queue that vanishes with its feed. The durable record of events is the
analytics service's log.

What a stream shows of an event is ``public_view``: its type, time, source, id, and the ids,
titles and ratings in its data; never an email address or a person's name (``user.registered``
carries both), because the dashboard and its stream are public, as is the summary they start from.
"""
import json
import logging
import time
import uuid

import eventlet
from eventlet.queue import Empty, Full, LightQueue
from kombu import Connection, Queue
from nameko.constants import AMQP_SSL_CONFIG_KEY, AMQP_URI_CONFIG_KEY
from nameko.extensions import DependencyProvider, SharedExtension

from services.kit.amqp import connect_retries
from services.kit.envelope import InvalidEvent, parse_event
from services.kit.errors import ServiceUnavailable
from services.kit.topology import events_exchange

log = logging.getLogger(__name__)

# Fields of an event's data a public page may show (ids, titles, ratings): no emails, no names.
SHOWN_FIELDS = ("user_id", "course_id", "enrollment_id", "review_id", "instructor_id", "rating",
                "has_comment", "title", "course_title")
LIVE_QUEUE_LENGTH = 1000  # the broker drops the oldest beyond this if the gateway falls behind
DEFAULT_BUFFER = 256  # events a slow browser may be behind before its oldest are dropped
DEFAULT_MAX_STREAMS = 100
HEARTBEAT_SECONDS = 15.0
RECONNECT_SECONDS = 1.0
BIND_WAIT_SECONDS = 5.0  # a new stream waits this long at most for a new feed's first attempt
FEED_IDLE_SECONDS = 30.0  # the feed stops this long after the last stream closed


def public_view(body, message_id=None, app_id=None):
    """What the dashboard shows of an AMQP message, or None if it is not an event."""
    try:
        event = parse_event(body, message_id=message_id, app_id=app_id)
    except InvalidEvent:
        return None
    return {"event_id": event.event_id, "event_type": event.event_type,
            "timestamp": event.timestamp.isoformat(), "source": event.source,
            "data": {key: event.data[key] for key in SHOWN_FIELDS if key in event.data}}


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

    def next(self, timeout):
        """The next event, or None after ``timeout`` seconds without one."""
        try:
            return self.events.get(timeout=timeout)
        except Empty:
            return None


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
        self.amqp_uri = config[AMQP_URI_CONFIG_KEY]
        self.ssl = config.get(AMQP_SSL_CONFIG_KEY)
        self.buffer_size = int(config.get("LIVE_BUFFER", DEFAULT_BUFFER))
        self.max_streams = int(config.get("LIVE_MAX_STREAMS", DEFAULT_MAX_STREAMS))

    def start(self):
        self._running = True

    def stop(self):
        self._running = False
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
            raise ServiceUnavailable(
                f"this gateway already serves {self.max_streams} live streams (LIVE_MAX_STREAMS)")
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


def stream(live, subscription, heartbeat=HEARTBEAT_SECONDS):
    """The body of a text/event-stream response: events as they come, a comment when idle.

    Runs after the worker has returned (werkzeug iterates it while writing the response), so
    an open stream holds a connection and a greenthread, not one of the service's workers. The
    subscription ends when the client goes away (the server closes this generator).
    """
    sequence = 0
    reported = 0  # events dropped from this stream's buffer that the client was told about
    try:
        yield "retry: 2000\n\n"  # the browser reconnects after 2 s if the stream breaks
        while True:
            view = subscription.next(timeout=heartbeat)
            if subscription.dropped > reported:  # the client fell behind: say how far
                reported = subscription.dropped
                yield sse_message({"dropped": reported}, event="dropped")
            if view is None:
                yield f": alive, {subscription.dropped} dropped\n\n"
                continue
            sequence += 1
            yield sse_message(view, sequence)
    finally:
        live.unsubscribe(subscription)
