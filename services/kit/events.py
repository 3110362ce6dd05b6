"""Events over the one ``knowledge_nest_events`` exchange, with an outbox, an inbox and dead letters.

Publishing (``EventDispatcher``)::

    class CourseService:
        name = "course"
        db = Database(Base)
        dispatch = EventDispatcher()

        @rpc
        def enroll(self, user_id, course_id):
            ...                                   # write with self.db.session
            self.dispatch("course.enrolled", {...})  # saved to the outbox, same transaction
            self.db.session.commit()              # the change and its event, or neither

    After the worker ends, the service's ``OutboxRelay`` publishes the new outbox rows with
    publisher confirms and marks them sent; rows left unsent (broker away, process killed) are
    swept up every few seconds, in id order. Delivery is at least once.

Consuming (``event_handler``)::

    @event_handler("review.created")        # binding keys; patterns such as "course.*" work
    def update_rating(self, event):          # event: services.kit.Event (the envelope)
        ...                                  # write with self.db.session; do not commit

    queue "<service>.<method>" --> parse the envelope --> skip if the inbox has its event_id
        --> run the handler --> commit its writes together with the inbox record --> ack
    not an event (bad JSON, no event_type) --> "<queue>.dlq", reason in the headers, ack
    handler raised --> "<queue>.retry.<delay>" then back, up to len(EVENT_RETRY_DELAYS) times,
        then "<queue>.dlq" with the exception; the queue goes on meanwhile.

    ``batch_event_handler``: the same, with the events that waited on the queue handled by one
    worker in one transaction (``BatchEventHandler``); a batch that fails runs again event by
    event, so retries, dead letters and duplicates are per event.
"""
import collections
import json
import logging
import sys
import weakref
from datetime import datetime, timezone
from functools import partial

import amqp
import kombu
from eventlet.semaphore import Semaphore
from nameko import events as nameko_events
from nameko.constants import AMQP_SSL_CONFIG_KEY, AMQP_URI_CONFIG_KEY, HEARTBEAT_CONFIG_KEY
from nameko.exceptions import ContainerBeingKilled
from nameko.extensions import SharedExtension
from nameko.messaging import Consumer
from sqlalchemy import func, select, update

from services.kit import metrics, topology
from services.kit.background import BackgroundLoop
from services.kit.amqp import (
    ConfirmedPublisher, PublishFailed, QueueConsumer, event_message, make_connection,
)
from services.kit.constants import (
    CONFIRM_TIMEOUT_CONFIG_KEY, DEAD_LETTER_EXCHANGE, DEFAULT_CONFIRM_TIMEOUT, DEFAULT_HEARTBEAT,
    DEFAULT_OUTBOX_BATCH_SIZE, DEFAULT_OUTBOX_POLL_INTERVAL, EVENTS_EXCHANGE,
    HEADER_ATTEMPTS,
    HEADER_EXCEPTION, HEADER_FAILED_AT, HEADER_ORIGINAL_QUEUE, HEADER_ORIGINAL_ROUTING_KEY,
    HEADER_REASON, HEADER_REPLAYED, OUTBOX_BATCH_SIZE_CONFIG_KEY, OUTBOX_POLL_INTERVAL_CONFIG_KEY,
    PREFETCH_COUNT_CONFIG_KEY,
)
from services.kit.db import Database, utcnow
from services.kit.envelope import InvalidEvent, new_event, parse_event
from services.kit.retention import RetentionSweeper, may_have_forgotten
from services.kit.trust import PublisherCheck, UntrustedPublisher, broker_user, republished

log = logging.getLogger(__name__)

# AMQP properties a retried or parked message keeps (its body is never touched).
KEPT_PROPERTIES = ("content_type", "content_encoding", "message_id", "type", "app_id",
                   "timestamp", "priority", "correlation_id")


def find_database(container, user):
    databases = [dep for dep in container.dependencies if isinstance(dep, Database)]
    if len(databases) != 1:
        raise RuntimeError(
            f"{user} of service {container.service_name!r} needs exactly one "
            f"services.kit.Database dependency (it has {len(databases)})")
    return databases[0]


def new_publisher(config):
    return ConfirmedPublisher(
        config[AMQP_URI_CONFIG_KEY],
        confirm_timeout=float(config.get(CONFIRM_TIMEOUT_CONFIG_KEY, DEFAULT_CONFIRM_TIMEOUT)),
        ssl=config.get(AMQP_SSL_CONFIG_KEY))


class Topology(SharedExtension):
    """Declares the broker topology (topology.py) once per container, when it is set up."""

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
        wanted = topology.configured_subscriptions(self.container.config)
        wanted.update(subscriptions or {})
        with self._lock:
            declared = self._declared or set()
            missing = {name: keys for name, keys in wanted.items()
                       if (name, tuple(keys)) not in declared}
            if not missing and self._declared is not None:
                return
            config = self.container.config
            with make_connection(config[AMQP_URI_CONFIG_KEY],
                                 config.get(HEARTBEAT_CONFIG_KEY, DEFAULT_HEARTBEAT),
                                 config.get(AMQP_SSL_CONFIG_KEY)) as connection:
                connection.ensure_connection(max_retries=3)
                topology.declare_topology(connection, config, missing)
            self._declared = declared | {(name, tuple(keys)) for name, keys in missing.items()}


class OutboxRelay(BackgroundLoop, SharedExtension):
    """Publishes the service's unsent outbox rows, in order, and marks them sent when confirmed.

    Woken right after a worker that dispatched an event ends; also sweeps every
    ``OUTBOX_POLL_INTERVAL`` seconds for rows a crashed process or an absent broker left behind.
    """

    def __init__(self):
        super().__init__()
        self.publisher = None

    def setup(self):
        config = self.container.config
        self.database = find_database(self.container, "EventDispatcher")
        self.database.require(self.database.outbox_model, "OutboxEventMixin", "EventDispatcher")
        self.poll_interval = float(config.get(OUTBOX_POLL_INTERVAL_CONFIG_KEY,
                                              DEFAULT_OUTBOX_POLL_INTERVAL))
        self.batch_size = int(config.get(OUTBOX_BATCH_SIZE_CONFIG_KEY, DEFAULT_OUTBOX_BATCH_SIZE))
        self.message_options = topology.message_options(config)  # EVENT_PRIORITY, EVENT_TTL
        self.broker_user = broker_user(config[AMQP_URI_CONFIG_KEY])  # each event's user_id
        self.publisher = new_publisher(config)

    def stop(self):
        super().stop()  # the current pass finishes first
        if self.publisher is not None:
            self.publisher.close()

    def kill(self):
        super().kill()
        if self.publisher is not None:
            self.publisher.close()

    def run_once(self):
        self.relay_pending()

    def relay_pending(self):
        """Publish every unsent row, oldest first; return how many were published.

        Two batches are in flight at a time: batch k+1 is read and published while the broker
        confirms batch k, then batch k is marked sent. Rows are marked only once confirmed; a
        failure leaves the unconfirmed ones unsent for the next pass (consumers' inboxes absorb
        the ones that did arrive).
        """
        published = 0
        in_flight = None  # (rows, ticket) published, not yet confirmed
        after_id = 0
        while True:
            rows = self._unsent_rows(after_id)
            ticket = self.publisher.publish_nowait(self._messages(rows)) if rows else None
            if in_flight is not None:
                published += self._mark_sent_when_confirmed(*in_flight)
            if not rows:
                return published
            in_flight = (rows, ticket)
            after_id = rows[-1].id
            if len(rows) < self.batch_size:
                return published + self._mark_sent_when_confirmed(*in_flight)

    # The relay talks to the database with plain connections, not ORM sessions: it runs after
    # every worker that dispatched, and a session cost about 0.3-0.6 ms more per pass.

    def _unsent_rows(self, after_id):
        model = self.database.outbox_model
        with self.database.engine.connect() as connection:  # a read: rolled back on return
            rows = connection.execute(
                select(model.id, model.event_id, model.event_type, model.body, model.headers)
                .where(model.sent_at.is_(None), model.id > after_id)
                .order_by(model.id).limit(self.batch_size)
            ).all()
            backlog = len(rows) if len(rows) < self.batch_size else connection.scalar(
                select(func.count()).select_from(model).where(model.sent_at.is_(None)))
        metrics.outbox_backlog(self.container.service_name, backlog)
        return rows

    def _messages(self, rows):
        return [(EVENTS_EXCHANGE, row.event_type,
                 event_message(row.body.encode("utf-8"), row.event_id, row.event_type,
                               self.container.service_name, headers=json.loads(row.headers),
                               user_id=self.broker_user, **self.message_options(row.event_type)))
                for row in rows]

    def _mark_sent_when_confirmed(self, rows, ticket):
        unroutable = self.publisher.wait_for(ticket)
        for _, _, _, routing_key in unroutable:
            # Not retried: the broker took it, and retrying would hold up every later event.
            # Every subscription's queue is declared up front (topology.py), so this means
            # that nobody subscribes to this event type.
            log.error("event %r published, but no queue is bound to it: nobody will see it",
                      routing_key)
        # Confirmed: mark sent. A crash right here republishes them; inboxes absorb that.
        model = self.database.outbox_model
        with self.database.engine.begin() as connection:
            connection.execute(update(model).where(model.id.in_([row.id for row in rows]))
                               .values(sent_at=utcnow()))
        for row in rows:
            metrics.event_published(self.container.service_name, row.event_type)
        return len(rows)


class EventDispatcher(nameko_events.EventDispatcher):
    """``self.dispatch(event_type, data)``: save the event in the outbox of the current transaction.

    ``event_type`` is a string, or a contract (an object with ``event_type``, ``owner`` and
    ``check(data)``, as contracts/events.py has one per type): then data that breaks it, or a
    service that does not own the type, fails the worker before anything is saved.

    Unlike nameko's, nothing is sent before the transaction commits, and nothing that committed is
    lost if the broker is away. Returns the ``Event`` (its ``event_id`` is final).
    """

    topology = Topology()
    relay = OutboxRelay()
    retention = RetentionSweeper()  # OUTBOX_RETENTION
    metrics_server = metrics.MetricsServer()  # METRICS_PORT

    def __init__(self, **options):
        super().__init__(**options)
        self._dispatched_by = weakref.WeakSet()

    def setup(self):
        # Not nameko's setup: it would declare "<service>.events" and publish through it.
        self.database = find_database(self.container, "EventDispatcher")
        self.topology.declare()

    def get_dependency(self, worker_ctx):
        headers = json.dumps(self.get_message_headers(worker_ctx), default=str)

        def dispatch(event_type, data):
            if hasattr(event_type, "check"):  # a contract (contracts/events.py): check first
                contract, event_type = event_type, event_type.event_type
                owner = getattr(contract, "owner", None)
                if owner is not None and owner != self.container.service_name:
                    raise ValueError(f"{event_type} is published by {owner!r} only, not by "
                                     f"{self.container.service_name!r} (its contract)")
                contract.check(data)  # raises: the worker fails, its transaction rolls back
            event = new_event(event_type, data, source=self.container.service_name)
            outbox_row = self.database.outbox_model(
                event_id=event.event_id, event_type=event.event_type,
                body=event.to_json().decode("utf-8"), headers=headers)
            self.database.worker_session(worker_ctx).add(outbox_row)
            self._dispatched_by.add(worker_ctx)
            return event

        return dispatch

    def worker_teardown(self, worker_ctx):
        if worker_ctx in self._dispatched_by:
            self._dispatched_by.discard(worker_ctx)
            self.relay.wake()


class FailureRouter(SharedExtension):
    """Sends a message that failed to its retry queue or parks it in its DLQ, confirmed."""

    def __init__(self):
        super().__init__()
        self.publisher = None
        self._lock = Semaphore()

    def setup(self):
        self.publisher = new_publisher(self.container.config)
        self.publishers = PublisherCheck(self.container.config)  # services/kit/trust.py

    def stop(self):
        if self.publisher is not None:
            self.publisher.close()

    kill = stop

    def forward(self, message, exchange, routing_key, extra_headers):
        properties = {key: message.properties[key] for key in KEPT_PROPERTIES + ("user_id",)
                      if message.properties.get(key) is not None}
        headers = dict(message.headers or {})
        headers.update(extra_headers)
        # published as our own broker user; who published the event goes along in a header
        properties, headers = republished(properties, headers, self.publishers.own_user)
        copy = amqp.Message(message.body, delivery_mode=2, application_headers=headers,
                            **properties)
        with self._lock:
            unroutable = self.publisher.publish_batch([(exchange, routing_key, copy)])
        if unroutable:  # its retry queue or DLQ is missing: the caller rejects it instead
            raise PublishFailed(f"no queue bound to {exchange!r}/{routing_key!r}")


class PrefetchingConsumer(kombu.Consumer):
    """A kombu consumer that sets its own prefetch right before it starts consuming.

    ``basic.qos`` applies to the consumers a channel starts after it, and nameko sets every
    consumer's prefetch before it starts any of them: the last value would hold for all.
    """

    def consume(self, no_ack=None):
        if self.prefetch_count is not None:
            self.qos(prefetch_count=self.prefetch_count)
        super().consume(no_ack)


class EventQueueConsumer(QueueConsumer):
    """nameko's QueueConsumer, handing over raw messages: the handler decodes them itself.

    nameko's lets kombu decode the body first; a body that does not decode raises out of
    kombu's receive callback and kills the consumer (and with it the service). Each handler
    may also ask for more prefetch than ``PREFETCH_COUNT`` (a batch handler does).
    """

    @property
    def prefetch_count(self):
        return int(self.container.config.get(PREFETCH_COUNT_CONFIG_KEY, self.container.max_workers))

    def get_consumers(self, consumer_cls, channel):
        for provider in self._providers:
            self._consumers[provider] = PrefetchingConsumer(
                channel, queues=[provider.queue],
                on_message=partial(self.handle_message, provider, None),
                prefetch_count=max(self.prefetch_count, getattr(provider, "min_prefetch", 0)))
        return self._consumers.values()


class EventHandler(nameko_events.EventHandler):
    queue_consumer = EventQueueConsumer()
    topology = Topology()
    failure_router = FailureRouter()
    retention = RetentionSweeper()  # INBOX_RETENTION
    metrics_server = metrics.MetricsServer()  # METRICS_PORT

    def __init__(self, *binding_keys, **kwargs):
        """Handle events whose type matches one of ``binding_keys`` (AMQP topic patterns).

        The queue is durable, one per service and method: ``<service>.<method>``. Instances of a
        service share it (competing consumers). Every handler's worker gets the envelope.
        """
        if not binding_keys or not all(isinstance(key, str) and key for key in binding_keys):
            raise TypeError("event_handler needs at least one binding key, e.g. 'course.created'")
        self.binding_keys = tuple(binding_keys)
        super().__init__(EVENTS_EXCHANGE, binding_keys[0], **kwargs)

    def setup(self):
        config = self.container.config
        self.queue_name = f"{self.container.service_name}.{self.method_name}"
        self.queue = topology.consumer_queue(self.queue_name, self.binding_keys, config)
        self.retry_delays = topology.retry_delays(config)
        self.database = find_database(self.container, "@event_handler")
        self.topology.declare({self.queue_name: self.binding_keys})
        Consumer.setup(self)  # not nameko's EventHandler.setup: it names its own queue

    def inbox_entries(self, worker_ctx):
        """(consumer, events) recorded in the worker's transaction (see Database.worker_setup)."""
        return self.queue_name, [worker_ctx.args[0]]

    def handle_message(self, body, message):
        try:
            self._handle_message(message)
        except Exception:  # never let one message take the consumer down
            log.exception("could not handle a message from %s; rejecting it to its DLQ",
                          self.queue_name)
            self._reject(message)

    def _handle_message(self, message):
        event = self._admit(message)
        if event is None:
            return
        try:
            self.container.spawn_worker(
                self, (event,), {}, context_data=self.unpack_message_headers(message),
                handle_result=partial(self.handle_result, message, event))
        except ContainerBeingKilled:
            self.queue_consumer.requeue_message(message)

    def _admit(self, message):
        """The message's event, or None once it is parked (not an event) or skipped (seen)."""
        properties = message.properties
        try:
            event = parse_event(message.body, message_id=properties.get("message_id"),
                                app_id=properties.get("app_id"))
        except InvalidEvent as exc:
            log.warning("not an event on %s: %s; parked in its DLQ", self.queue_name, exc)
            self._park(message, reason=str(exc), exception="InvalidEvent", attempts=0)
            return None
        try:
            self.failure_router.publishers.check(event.event_type, properties,
                                                 message.headers or {})
        except UntrustedPublisher as exc:
            log.warning("untrusted event %s on %s: %s; parked in its DLQ", event.event_id,
                        self.queue_name, exc)
            self._park(message, reason=str(exc), exception="UntrustedPublisher", attempts=0)
            return None
        if self._may_be_duplicate(message) and self._already_processed(event):
            self._skip_duplicate(message, event)
            return None
        if HEADER_REPLAYED in (message.headers or {}) and self._may_have_forgotten(event):
            reason = (f"replayed event from {event.timestamp.isoformat()} is older than the "
                      f"inbox retention of {self.queue_name} (INBOX_RETENTION): whether it was "
                      f"handled before cannot be told, so it is not handled again")
            log.warning("%s; parked in its DLQ", reason)
            self._park(message, reason=reason, exception="BeyondInboxRetention", attempts=0)
            return None
        return event

    @staticmethod
    def _may_be_duplicate(message):
        """Worth an inbox lookup before the handler runs: seen before, retried, or replayed.

        A first delivery skips the lookup (a SELECT per event, about a third of the cost of
        handling one): a duplicate that arrives fresh (the relay republishing after a crash)
        still has no effect, because its inbox record's primary key fails the commit.
        """
        headers = message.headers or {}
        return bool(message.delivery_info.get("redelivered") or HEADER_ATTEMPTS in headers
                    or HEADER_REPLAYED in headers)

    def _may_have_forgotten(self, event):
        try:
            return may_have_forgotten(self.database, self.queue_name, event)
        except Exception:  # database away: the worker fails and the message is retried
            return False

    def _already_processed(self, event):
        try:
            return self.database.has_processed(self.queue_name, event.event_id)
        except Exception:  # database away: the worker fails and the message is retried
            return False

    def _rollback(self, worker_ctx):
        """Roll the failed worker's transaction back: it frees SQLite's one connection."""
        try:
            self.database.worker_session(worker_ctx).rollback()
        except Exception:
            log.warning("rollback failed on %s", self.queue_name, exc_info=True)

    def _skip_duplicate(self, message, event):
        log.info("event %s already processed by %s; skipped", event.event_id, self.queue_name)
        metrics.duplicate_skipped(self.container.service_name, self.queue_name,
                                  event.event_type)
        self.queue_consumer.ack_message(message)

    def handle_result(self, message, event, worker_ctx, result=None, exc_info=None):
        if exc_info is None:
            try:
                if not self.database.commit_worker(worker_ctx, self.queue_name, event.event_id):
                    log.info("event %s already processed by %s (inbox); skipped",
                             event.event_id, self.queue_name)
                    metrics.duplicate_skipped(self.container.service_name, self.queue_name,
                                              event.event_type)
                else:
                    log.info("event %s (%s) handled by %s", event.event_id, event.event_type,
                             self.queue_name)
                    metrics.event_handled(self.container.service_name, self.queue_name,
                                          event.event_type)
            except Exception:
                log.exception("commit failed for event %s on %s", event.event_id,
                              self.queue_name)
                exc_info = sys.exc_info()
        try:
            if exc_info is None:
                self.queue_consumer.ack_message(message)
            else:
                self._rollback(worker_ctx)
                if self._already_processed(event):
                    # A duplicate whose handler tripped over its own earlier effect (a unique
                    # key, say) before the inbox could tell at commit: skipped, not retried.
                    self._skip_duplicate(message, event)
                else:
                    self._retry_or_park(message, exc_info[1])
        except Exception:
            log.exception("could not settle event %s on %s", event.event_id, self.queue_name)
            self._reject(message)
        return result, exc_info

    def _retry_or_park(self, message, exc):
        attempts = int((message.headers or {}).get(HEADER_ATTEMPTS, 0)) + 1
        metrics.event_failed(self.container.service_name, self.queue_name,
                             metrics.event_type_of(message))
        reason = f"{type(exc).__name__}: {exc}"[:1000]
        # InvalidEvent from a handler: the event can never be handled; retrying cannot help.
        if attempts > len(self.retry_delays) or isinstance(exc, InvalidEvent):
            log.error("handler %s failed %d time(s); parked in its DLQ: %s",
                      self.queue_name, attempts, reason)
            self._park(message, reason=reason, exception=type(exc).__name__, attempts=attempts)
            return
        delay = self.retry_delays[attempts - 1]
        log.warning("handler %s failed (try %d of %d); retrying in %ss: %s", self.queue_name,
                    attempts, len(self.retry_delays) + 1, delay, reason)
        self.failure_router.forward(
            message, "", topology.retry_queue_name(self.queue_name, delay),
            self._failure_headers(message, reason, type(exc).__name__, attempts))
        self.queue_consumer.ack_message(message)

    def _park(self, message, reason, exception, attempts):
        self.failure_router.forward(
            message, DEAD_LETTER_EXCHANGE, self.queue_name,
            self._failure_headers(message, reason, exception, attempts))
        self.queue_consumer.ack_message(message)  # only once the parked copy is confirmed
        metrics.event_dead_lettered(self.container.service_name, self.queue_name,
                                    metrics.event_type_of(message),
                                    "invalid" if exception == "InvalidEvent" else "failed")

    def _failure_headers(self, message, reason, exception, attempts):
        headers = message.headers or {}
        return {
            HEADER_ATTEMPTS: attempts,
            HEADER_REASON: reason,
            HEADER_EXCEPTION: exception,
            HEADER_ORIGINAL_ROUTING_KEY: headers.get(HEADER_ORIGINAL_ROUTING_KEY)
            or message.delivery_info.get("routing_key"),
            HEADER_ORIGINAL_QUEUE: self.queue_name,
            HEADER_FAILED_AT: datetime.now(timezone.utc).isoformat(),
        }

    def _reject(self, message):
        """Last resort: the broker dead-letters it to the DLQ itself (x-death says why)."""
        if message.channel.connection:
            try:
                message.reject(requeue=False)
            except Exception:  # connection gone: the broker redelivers the message
                log.warning("could not reject a message on %s", self.queue_name, exc_info=True)


class BatchEventHandler(EventHandler):
    """Handles the events waiting on its queue together: one worker and one transaction for many.

    ``@batch_event_handler("course.*", max_batch=100)``: the handler gets a list of ``Event``s,
    oldest first, and writes with ``self.db.session`` as an ``event_handler`` does. The kit
    commits the inbox records of the whole batch with those writes, then acks every message.
    For a handler whose own work is small the commit is most of the cost of an event; this
    shares it.

    One batch runs at a time per instance. It starts as soon as an event arrives and takes every
    event that arrived while the previous one ran (at most ``max_batch``): no added wait when the
    queue is quiet, bigger batches under load. The guarantees are ``event_handler``'s: when the
    handler raises or the commit fails (a duplicate's inbox record, say), the batch is rolled back
    and its events are handled again one at a time, each in its own transaction (the handler gets
    a list of one), so only the event at fault is retried or dead-lettered, and a duplicate is
    skipped.
    """

    def __init__(self, *binding_keys, max_batch=100, **kwargs):
        if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
            raise TypeError(f"max_batch must be a positive int, got {max_batch!r}")
        self.max_batch = max_batch
        super().__init__(*binding_keys, **kwargs)

    @property
    def min_prefetch(self):
        return 2 * self.max_batch  # a batch in flight while the next one fills up

    def setup(self):
        super().setup()
        self._waiting = collections.deque()     # (message, event) not given to a worker yet
        self._one_by_one = collections.deque()  # (message, event) of a batch that failed
        self._busy = False
        self._stopping = False

    def stop(self):
        # Events still waiting stay unacknowledged: the broker delivers them again.
        self._stopping = True
        super().stop()

    def inbox_entries(self, worker_ctx):
        return self.queue_name, worker_ctx.args[0]

    def _handle_message(self, message):
        event = self._admit(message)
        if event is not None:
            self._waiting.append((message, event))
            self._run_next()

    def _run_next(self):
        """Start a worker unless one runs: the failed batch's events one by one, else a batch."""
        if self._busy or self._stopping:
            return
        if self._one_by_one:
            batch = [self._one_by_one.popleft()]
        elif self._waiting:
            batch = [self._waiting.popleft()
                     for _ in range(min(self.max_batch, len(self._waiting)))]
        else:
            return
        if len(batch) == 1:  # alone: settled as event_handler settles it, nothing to take apart
            message, event = batch[0]
            self._spawn(batch, partial(self._single_done, message, event))
        else:
            self._spawn(batch, partial(self._batch_done, batch))

    def _spawn(self, batch, handle_result):
        self._busy = True
        try:
            self.container.spawn_worker(
                self, ([event for _, event in batch],), {},
                context_data=self.unpack_message_headers(batch[0][0]),
                handle_result=handle_result)
        except Exception as exc:
            self._busy = False
            if not isinstance(exc, ContainerBeingKilled):
                log.exception("could not start a worker on %s; rejecting %d message(s) to its "
                              "DLQ", self.queue_name, len(batch))
            for message, _ in batch:
                if isinstance(exc, ContainerBeingKilled):
                    self.queue_consumer.requeue_message(message)
                else:
                    self._reject(message)

    def _batch_done(self, batch, worker_ctx, result=None, exc_info=None):
        try:
            if exc_info is None:
                try:
                    self.database.worker_session(worker_ctx).commit()
                except Exception:
                    exc_info = sys.exc_info()
            if exc_info is not None:
                self._rollback(worker_ctx)
                log.warning("a batch of %d events on %s failed (%s: %s); handling them one "
                            "at a time", len(batch), self.queue_name, exc_info[0].__name__,
                            exc_info[1])
                self._one_by_one.extend(batch)
                return result, exc_info
            for message, event in batch:
                log.info("event %s (%s) handled by %s", event.event_id, event.event_type,
                         self.queue_name)
                metrics.event_handled(self.container.service_name, self.queue_name,
                                      event.event_type)
                try:
                    self.queue_consumer.ack_message(message)
                except Exception:  # the broker delivers it again; the inbox skips it then
                    log.warning("could not ack event %s on %s", event.event_id,
                                self.queue_name, exc_info=True)
            return result, exc_info
        finally:
            self._busy = False
            self._run_next()

    def _single_done(self, message, event, worker_ctx, result=None, exc_info=None):
        try:
            return self.handle_result(message, event, worker_ctx, result, exc_info)
        finally:
            self._busy = False
            self._run_next()


event_handler = EventHandler.decorator
batch_event_handler = BatchEventHandler.decorator
