"""Our kit under load: a producer whose events go through the outbox relay, and consumers that
write each event to their database with the inbox: one transaction per event (``event_handler``)
or per batch (``batch_event_handler``). Run with ``nameko run`` by bench/harness.py."""
import json
import time

from nameko.web.handlers import http
from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bench.payload import event_data
from services.kit import Database, EventDispatcher, batch_event_handler, event_handler
from services.kit.db import InboxHorizonMixin, InboxRecordMixin, OutboxEventMixin

RELAY_ONLY = "bench.relay_only"  # bound to a queue nobody consumes: the relay alone
END_TO_END = "bench.event"       # consumed by KitSink
BATCHED = "bench.batch_event"    # consumed by KitBatchSink
MAX_BATCH = 100


class Base(DeclarativeBase):
    pass


class OutboxEvent(OutboxEventMixin, Base):
    __tablename__ = "outbox_events"


class InboxRecord(InboxRecordMixin, Base):
    __tablename__ = "inbox_records"


class InboxHorizon(InboxHorizonMixin, Base):
    pass


class Received(Base):
    """One row per handled event: the consumer's own write."""
    __tablename__ = "received"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(BigInteger)


class KitSource:
    name = "kit_src"
    db = Database(Base)
    dispatch = EventDispatcher()

    @http("POST", "/dispatch/<string:event_type>/<int:count>/<int:per_commit>")
    def dispatch_many(self, request, event_type, count, per_commit):
        """``count`` events into the outbox, ``per_commit`` per transaction; the relay is woken
        when this worker ends (and sweeps meanwhile)."""
        data = event_data()
        started = time.time()
        for index in range(count):
            self.dispatch(event_type, data)
            if (index + 1) % per_commit == 0:
                self.db.session.commit()
        self.db.session.commit()
        return 200, {"Content-Type": "application/json"}, json.dumps(
            {"count": count, "started": started, "committed": time.time()})


class KitSink:
    name = "kit_sink"
    db = Database(Base)

    @event_handler(END_TO_END)
    def handle(self, event):
        self.db.session.add(Received(event_id=event.event_id, user_id=event.data["user_id"]))


class KitBatchSink:
    name = "kit_batch_sink"
    db = Database(Base)

    @batch_event_handler(BATCHED, max_batch=MAX_BATCH)
    def handle(self, events):
        self.db.session.add_all([Received(event_id=event.event_id, user_id=event.data["user_id"])
                                 for event in events])
