"""The outbox: an event is saved in the transaction of the change it announces, then published.

    class CourseService:
        name = "course"
        db = Database(Base)
        dispatch = EventDispatcher()

        @rpc
        def enroll(self, user_id, course_id):
            ...                                      # write with self.db.session
            self.dispatch("course.enrolled", {...})  # an outbox row, in the same transaction
                                                     # the kit commits: the change and its
                                                     # event, or neither

    worker commits --> outbox_events row (sent_at NULL)
    worker ends   --> OutboxRelay wakes: unsent rows, oldest first, in batches
                      --> publish to knowledge_nest_events (publisher confirms)
                      --> confirmed: sent_at = now
    broker away, process killed --> rows stay unsent; swept up every OUTBOX_POLL_INTERVAL s

Delivery is at least once: a crash between the confirm and the marking republishes; the
consumers' inboxes absorb that (inbox.py). For the same reason the marking's COMMIT does not
wait for PostgreSQL's WAL flush (``commit_without_flush_wait``, db.py): a database server crash
that loses it republishes too.
"""
import json
import logging
import weakref

from nameko import events as nameko_events
from nameko.extensions import SharedExtension
from sqlalchemy import func, select, update

from services.kit import metrics, topology
from services.kit.amqp import event_message, new_publisher
from services.kit.background import BackgroundLoop
from services.kit.constants import EVENTS_EXCHANGE
from services.kit.db import commit_without_flush_wait, find_database, utcnow
from services.kit.envelope import new_event
from services.kit.retention import RetentionSweeper
from services.kit.settings import AMQP_URI, OUTBOX_BATCH_SIZE, OUTBOX_POLL_INTERVAL
from services.kit.topology import Topology
from services.kit.trust import broker_user

log = logging.getLogger(__name__)


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
        self.poll_interval = OUTBOX_POLL_INTERVAL.read(config)
        self.batch_size = OUTBOX_BATCH_SIZE.read(config)
        self.message_options = topology.message_options(config)  # EVENT_PRIORITY, EVENT_TTL
        self.broker_user = broker_user(AMQP_URI.read(config))  # each event's user_id
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
        # Confirmed: mark sent. A crash right here republishes them; inboxes absorb that, so
        # the marking need not wait for the disk either.
        model = self.database.outbox_model
        with self.database.engine.begin() as connection:
            commit_without_flush_wait(connection)
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
