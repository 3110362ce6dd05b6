"""Consuming events: ``event_handler`` and ``batch_event_handler``, with an inbox and retries.

    @event_handler("review.created")        # binding keys; patterns such as "course.*" work
    def update_rating(self, event):          # event: services.kit.Event (the envelope)
        ...                                  # write with self.db.session; do not commit

    [<service>.<method>] --> parse the envelope --> check its publisher (trust.py)
        --> may be a duplicate (redelivered, retried, replayed)? skip it if the inbox knows it
        --> run the handler --> one outcome, then one action on the message:
              committed, with its inbox record        HANDLED    ack
              its inbox record was there already      DUPLICATE  ack, skipped
              failed, tries left (EVENT_RETRY_DELAYS) RETRY      to <queue>.retry.<ms>ms, ack
              failed its last try, or InvalidEvent    PARK       to <queue>.dlq, ack
              the action itself failed                           reject: the broker's DLQ
    not an event (bad JSON, no event_type), untrusted, or replayed from before what the inbox
    remembers --> parked at once, reason in the headers (failures.py)

``batch_event_handler``: the same, with the events that waited on the queue handled by one
worker in one transaction (``BatchEventHandler``); a batch that fails runs again event by
event, so retries, dead letters and duplicates are per event.
"""
import collections
import logging
import sys
from functools import partial
from typing import NamedTuple

import kombu
from nameko import events as nameko_events
from nameko.exceptions import ContainerBeingKilled
from nameko.messaging import Consumer

from services.kit import failures, metrics, topology
from services.kit.amqp import QueueConsumer
from services.kit.constants import EVENTS_EXCHANGE
from services.kit.db import find_database, rollback
from services.kit.envelope import InvalidEvent, parse_event
from services.kit.failures import FailureRouter
from services.kit.inbox import Inbox, is_replayed, may_be_duplicate
from services.kit.retention import RetentionSweeper
from services.kit.settings import EVENT_MAX_BATCH, PREFETCH_COUNT
from services.kit.topology import Topology
from services.kit.trust import UntrustedPublisher

log = logging.getLogger(__name__)

# What became of an event's worker (EventHandler.handle_result), each with its one action.
HANDLED = "handled"
DUPLICATE = "duplicate"
RETRY = "retry"
PARK = "park"


class Outcome(NamedTuple):
    action: str                    # HANDLED, DUPLICATE, RETRY or PARK
    exc_info: tuple | None = None  # the handler's error, or the commit's
    attempts: int = 0              # RETRY, PARK: the tries so far, this one included


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
        return PREFETCH_COUNT.read(self.container.config)

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
        self.inbox = Inbox(self.database, self.queue_name)  # Database.worker_setup records in it
        self.topology.declare({self.queue_name: self.binding_keys})
        Consumer.setup(self)  # not nameko's EventHandler.setup: it names its own queue

    def events_of(self, worker_ctx):
        """The events a worker handles: their inbox records commit with its writes."""
        return [worker_ctx.args[0]]

    def handle_message(self, body, message):
        try:
            self._handle_message(message)
        except Exception:  # never let one message take the consumer down
            log.exception("could not handle a message from %s; rejecting it to its DLQ",
                          self.queue_name)
            failures.reject(message, self.queue_name)

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
        if may_be_duplicate(message) and self.inbox.knows(event.event_id):
            self._skip_duplicate(message, event)
            return None
        if is_replayed(message) and self.inbox.may_have_forgotten(event):
            reason = (f"replayed event from {event.timestamp.isoformat()} is older than the "
                      f"inbox retention of {self.queue_name} (INBOX_RETENTION): whether it was "
                      f"handled before cannot be told, so it is not handled again")
            log.warning("%s; parked in its DLQ", reason)
            self._park(message, reason=reason, exception="BeyondInboxRetention", attempts=0)
            return None
        return event

    def handle_result(self, message, event, worker_ctx, result=None, exc_info=None):
        try:
            outcome = self._outcome(message, event, worker_ctx, exc_info)
            exc_info = outcome.exc_info
            self._settle(message, event, outcome)
        except Exception:  # the broker (or the database) failed us meanwhile
            log.exception("could not settle event %s on %s", event.event_id, self.queue_name)
            failures.reject(message, self.queue_name)
        return result, exc_info

    def _outcome(self, message, event, worker_ctx, exc_info):
        """Commit a worker that succeeded (with its inbox record); decide what its message gets."""
        session = self.database.worker_session(worker_ctx)
        if exc_info is None:
            try:
                committed = self.inbox.commit(session, event.event_id)
            except Exception:
                log.exception("commit failed for event %s on %s", event.event_id,
                              self.queue_name)
                exc_info = sys.exc_info()
            else:
                return Outcome(HANDLED if committed else DUPLICATE)
        rollback(session)
        if self.inbox.knows(event.event_id):
            # A duplicate whose handler tripped over its own earlier effect (a unique key,
            # say) before the inbox could tell at commit: skipped, not retried.
            return Outcome(DUPLICATE, exc_info)
        attempts = failures.attempts_before(message) + 1
        # InvalidEvent from a handler: the event can never be handled; retrying cannot help.
        if attempts > len(self.retry_delays) or isinstance(exc_info[1], InvalidEvent):
            return Outcome(PARK, exc_info, attempts)
        return Outcome(RETRY, exc_info, attempts)

    def _settle(self, message, event, outcome):
        """The one action for ``outcome`` on ``message``; every one ends with an ack."""
        if outcome.action == HANDLED:
            log.info("event %s (%s) handled by %s", event.event_id, event.event_type,
                     self.queue_name)
            metrics.event_handled(self.container.service_name, self.queue_name,
                                  event.event_type)
            self.queue_consumer.ack_message(message)
        elif outcome.action == DUPLICATE:
            self._skip_duplicate(message, event)
        else:
            self._retry_or_park(message, outcome)

    def _skip_duplicate(self, message, event):
        log.info("event %s already processed by %s; skipped", event.event_id, self.queue_name)
        metrics.duplicate_skipped(self.container.service_name, self.queue_name,
                                  event.event_type)
        self.queue_consumer.ack_message(message)

    def _retry_or_park(self, message, outcome):
        exc = outcome.exc_info[1]
        metrics.event_failed(self.container.service_name, self.queue_name,
                             metrics.event_type_of(message))
        reason = f"{type(exc).__name__}: {exc}"[:1000]
        if outcome.action == PARK:
            log.error("handler %s failed %d time(s); parked in its DLQ: %s",
                      self.queue_name, outcome.attempts, reason)
            self._park(message, reason=reason, exception=type(exc).__name__,
                       attempts=outcome.attempts)
            return
        delay = self.retry_delays[outcome.attempts - 1]
        log.warning("handler %s failed (try %d of %d); retrying in %ss: %s", self.queue_name,
                    outcome.attempts, len(self.retry_delays) + 1, delay, reason)
        self.failure_router.retry(message, self.queue_name, delay, reason, type(exc).__name__,
                                  outcome.attempts)
        self.queue_consumer.ack_message(message)

    def _park(self, message, reason, exception, attempts):
        self.failure_router.park(message, self.queue_name, reason, exception, attempts)
        self.queue_consumer.ack_message(message)  # only once the parked copy is confirmed
        metrics.event_dead_lettered(self.container.service_name, self.queue_name,
                                    metrics.event_type_of(message),
                                    "invalid" if exception == "InvalidEvent" else "failed")


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
        # an operator's cap (smaller transactions, or one event each to watch a backlog drain)
        cap = EVENT_MAX_BATCH.read(self.container.config)
        if cap is not None:
            self.max_batch = min(self.max_batch, cap)
        self._waiting = collections.deque()     # (message, event) not given to a worker yet
        self._one_by_one = collections.deque()  # (message, event) of a batch that failed
        self._busy = False
        self._stopping = False

    def stop(self):
        # Events still waiting stay unacknowledged: the broker delivers them again.
        self._stopping = True
        super().stop()

    def events_of(self, worker_ctx):
        return worker_ctx.args[0]

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

    def batch_context_data(self, batch):
        """The context data of a worker for ``batch`` ((message, event) pairs): its first
        message's headers (the call id stack, ...). A subclass may add what it reads from each."""
        return self.unpack_message_headers(batch[0][0])

    def _spawn(self, batch, handle_result):
        self._busy = True
        try:
            self.container.spawn_worker(
                self, ([event for _, event in batch],), {},
                context_data=self.batch_context_data(batch), handle_result=handle_result)
        except Exception as exc:
            self._busy = False
            if not isinstance(exc, ContainerBeingKilled):
                log.exception("could not start a worker on %s; rejecting %d message(s) to its "
                              "DLQ", self.queue_name, len(batch))
            for message, _ in batch:
                if isinstance(exc, ContainerBeingKilled):
                    self.queue_consumer.requeue_message(message)
                else:
                    failures.reject(message, self.queue_name)

    def _batch_done(self, batch, worker_ctx, result=None, exc_info=None):
        try:
            session = self.database.worker_session(worker_ctx)
            if exc_info is None:
                try:
                    session.commit()
                except Exception:
                    exc_info = sys.exc_info()
            if exc_info is not None:
                rollback(session)
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
