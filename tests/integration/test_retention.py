"""Bounded growth (services/kit/retention.py) on the real broker, SQLite and PostgreSQL.

Rows are aged by writing their timestamps back in the database; then one sweep runs as the
service's background loop would run it, and the test reads what is left.
"""
import json
import uuid
from datetime import datetime, timedelta, timezone

import pika
import pytest
from nameko.rpc import rpc
from nameko.testing.services import entrypoint_hook
from sqlalchemy import Integer, String, create_engine, func, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.kit import (
    Database, EventDispatcher, InboxHorizonMixin, InboxRecordMixin, OutboxEventMixin, event_handler,
)
from services.kit.constants import HEADER_REASON, HEADER_REPLAYED
from services.kit.db import normalize_url
from services.kit.retention import RetentionSweeper
from tests.support.broker import wait_until
from tests.support.db import query

pytestmark = pytest.mark.integration

HOUR = 3600


class Base(DeclarativeBase):
    pass


class OutboxEvent(OutboxEventMixin, Base):
    pass


class InboxRecord(InboxRecordMixin, Base):
    pass


class InboxHorizon(InboxHorizonMixin, Base):
    pass


class Effect(Base):
    __tablename__ = "effects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64))


class Announcer:
    name = "announcer"
    db = Database(Base)
    dispatch = EventDispatcher()

    @rpc
    def announce(self, count):
        for number in range(count):
            self.dispatch("retention.tick", {"number": number})
        self.db.session.commit()


class Counter:
    name = "counter"
    db = Database(Base)

    @event_handler("retention.*")
    def count(self, event):
        self.db.session.add(Effect(event_id=event.event_id))


QUEUE = "counter.count"


@pytest.fixture
def config(rabbit_config, make_database_url, database_backend):
    urls = {"announcer:Base": make_database_url(database_backend),
            "counter:Base": make_database_url(database_backend)}
    for url in urls.values():
        engine = create_engine(normalize_url(url))
        Base.metadata.create_all(engine)
        engine.dispose()
    # a sweep only when the test runs one (RETENTION_INTERVAL far away); 4 rows per transaction
    return dict(rabbit_config, DB_URIS=urls, EVENT_RETRY_DELAYS=[0.2], OUTBOX_POLL_INTERVAL=0.5,
                HEARTBEAT=5, OUTBOX_RETENTION=HOUR, INBOX_RETENTION=2 * HOUR,
                RETENTION_INTERVAL=HOUR, RETENTION_BATCH_SIZE=4)


def sweeper(container):
    [found] = [ext for ext in container.extensions if isinstance(ext, RetentionSweeper)]
    return found


def age(url, statement):
    engine = create_engine(normalize_url(url))
    try:
        with engine.begin() as connection:
            connection.execute(statement)
    finally:
        engine.dispose()


def ago(seconds):
    return datetime.now(timezone.utc) - timedelta(seconds=seconds)


def envelope(event_id, timestamp, number):
    return {"event_id": event_id, "event_type": "retention.tick", "source": "announcer",
            "version": 1, "timestamp": timestamp.isoformat(), "data": {"number": number}}


def effects_of(config, event_id=None):
    statement = select(func.count()).select_from(Effect)
    if event_id is not None:
        statement = statement.where(Effect.event_id == event_id)
    return query(config["DB_URIS"]["counter:Base"], statement)[0][0]


def test_outbox_keeps_unsent_and_recent_rows(container_factory, config, broker_proxy):
    container = container_factory(Announcer, dict(config, AMQP_URI=broker_proxy.amqp_uri))
    container.start()
    url = config["DB_URIS"]["announcer:Base"]

    def unsent():
        return query(url, select(func.count()).select_from(OutboxEvent)
                     .where(OutboxEvent.sent_at.is_(None)))[0][0]

    with entrypoint_hook(container, "announce") as announce:
        announce(10)
    wait_until(lambda: unsent() == 0, message="the relay marked every row sent")
    ids = [row.id for row in query(url, select(OutboxEvent.id).order_by(OutboxEvent.id))]
    # 9 rows sent two hours ago (past OUTBOX_RETENTION), 1 just now
    age(url, update(OutboxEvent).where(OutboxEvent.id.in_(ids[:9])).values(sent_at=ago(2 * HOUR)))
    broker_proxy.cut()  # two more that cannot be published, written three hours ago
    with entrypoint_hook(container, "announce") as announce:
        announce(2)
    age(url, update(OutboxEvent).where(OutboxEvent.sent_at.is_(None))
        .values(created_at=ago(3 * HOUR)))

    deleted = sweeper(container).sweep()

    assert deleted == {"outbox": 9, "inbox": 0}  # in three transactions of at most 4
    left = query(url, select(OutboxEvent.id, OutboxEvent.sent_at).order_by(OutboxEvent.id))
    assert [row.id for row in left if row.sent_at is not None] == ids[9:]
    assert unsent() == 2
    broker_proxy.restore()  # the relay still owes them to the broker, and delivers them
    wait_until(lambda: unsent() == 0, timeout=20, message="the two published once back")


def test_inbox_drops_old_records_keeps_recent_and_still_absorbs_duplicates(
        container_factory, config, plain):
    container = container_factory(Counter, config)
    container.start()
    url = config["DB_URIS"]["counter:Base"]
    old_ids = [uuid.uuid4().hex for _ in range(6)]
    recent_id = uuid.uuid4().hex
    for number, event_id in enumerate(old_ids + [recent_id]):
        plain.publish("retention.tick", envelope(event_id, ago(0), number))
    wait_until(lambda: effects_of(config) == 7, message="all seven handled")
    age(url, update(InboxRecord).where(InboxRecord.event_id.in_(old_ids))
        .values(processed_at=ago(3 * HOUR)))

    deleted = sweeper(container).sweep()

    assert deleted == {"outbox": 0, "inbox": 6}
    assert [row.event_id for row in query(url, select(InboxRecord.event_id))] == [recent_id]
    [horizon] = query(url, select(InboxHorizon))
    assert horizon.consumer == QUEUE
    # the recent record still absorbs a redelivered copy: no second effect
    plain.publish("retention.tick", envelope(recent_id, ago(0), 6))
    plain.publish("retention.tick", envelope(uuid.uuid4().hex, ago(0), 7))  # a marker after it
    wait_until(lambda: effects_of(config) == 8, message="the marker handled")
    wait_until(lambda: plain.message_count(QUEUE) == 0, message="queue drained")
    assert effects_of(config, recent_id) == 1


def test_replay_beyond_the_horizon_is_parked_not_doubled(container_factory, config, plain):
    container = container_factory(Counter, config)
    container.start()
    url = config["DB_URIS"]["counter:Base"]
    forgotten = envelope(uuid.uuid4().hex, ago(4 * HOUR), 1)  # handled long ago
    remembered = envelope(uuid.uuid4().hex, ago(60), 2)       # handled a minute ago
    never_seen = envelope(uuid.uuid4().hex, ago(30 * 60), 3)  # inside the window, new here
    plain.publish("retention.tick", forgotten)
    plain.publish("retention.tick", remembered)
    wait_until(lambda: effects_of(config) == 2, message="both handled")
    age(url, update(InboxRecord).where(InboxRecord.event_id == forgotten["event_id"])
        .values(processed_at=ago(4 * HOUR)))
    assert sweeper(container).sweep() == {"outbox": 0, "inbox": 1}

    replayed = pika.BasicProperties(delivery_mode=2, headers={HEADER_REPLAYED: "now"})
    for body in (forgotten, remembered, never_seen):
        plain.publish("retention.tick", body, properties=replayed)
    dlq = QUEUE + ".dlq"
    wait_until(lambda: plain.message_count(dlq) == 1, message="the forgotten one parked")
    wait_until(lambda: effects_of(config, never_seen["event_id"]) == 1,
               message="the new one handled")
    wait_until(lambda: plain.message_count(QUEUE) == 0, message="queue drained")

    assert effects_of(config, forgotten["event_id"]) == 1   # not doubled
    assert effects_of(config, remembered["event_id"]) == 1  # its inbox record skipped it
    _, properties, body = plain.get(dlq)
    assert json.loads(body)["event_id"] == forgotten["event_id"]
    assert "older than the inbox retention" in properties.headers[HEADER_REASON]


def test_a_consumer_that_never_pruned_takes_its_whole_history(container_factory, config, plain):
    container = container_factory(Counter, config)
    container.start()
    replayed = pika.BasicProperties(delivery_mode=2, headers={HEADER_REPLAYED: "now"})
    ancient = envelope(uuid.uuid4().hex, ago(400 * 24 * HOUR), 1)
    plain.publish("retention.tick", ancient, properties=replayed)
    wait_until(lambda: effects_of(config, ancient["event_id"]) == 1, message="handled")
    assert plain.message_count(QUEUE + ".dlq") == 0


@pytest.mark.parametrize("inbox_retention", [60, 0])
def test_an_inbox_retention_shorter_than_retries_is_refused(container_factory, config,
                                                            inbox_retention):
    container = container_factory(Counter, dict(config, INBOX_RETENTION=inbox_retention))
    with pytest.raises(ValueError, match="INBOX_RETENTION"):
        container.start()
