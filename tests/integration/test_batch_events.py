"""``batch_event_handler`` against the real broker and real databases: many events, one commit.

The guarantees are ``event_handler``'s (inbox, retries, dead letters); these tests check that
batching keeps them when a batch holds a duplicate, a failing event or a poison message.
"""
import json
from urllib.parse import unquote, urlparse

import eventlet
import pytest
from sqlalchemy import Integer, String, Text, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.kit import Database, InboxRecordMixin, batch_event_handler, event_handler
from services.kit.db import normalize_url
from services.kit.handlers import BatchEventHandler
from tests.support.broker import wait_until
from tests.support.db import query

pytestmark = pytest.mark.integration

QUEUE = "ledger.record"
SINGLE_QUEUE = "ledger.record_single"
MAX_BATCH = 25


class Base(DeclarativeBase):
    pass


class InboxRecord(InboxRecordMixin, Base):
    pass


class Entry(Base):
    """The handler's effect: one row per event, unique by event (a duplicate cannot hide)."""
    __tablename__ = "entries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    seq: Mapped[int] = mapped_column(Integer)
    data: Mapped[str] = mapped_column(Text)


class Ledger:
    name = "ledger"
    db = Database(Base)
    batches = []  # the seq numbers each call got, in this process
    pause = 0     # seconds each call takes (to cut the broker's connection in the middle)

    @batch_event_handler("entry.*", max_batch=MAX_BATCH)
    def record(self, events):
        Ledger.batches.append([event.data["seq"] for event in events])
        eventlet.sleep(Ledger.pause)
        for event in events:
            if event.data.get("fail"):
                raise RuntimeError(f"entry {event.data['seq']} refused on purpose")
            self.db.session.add(Entry(event_id=event.event_id, seq=event.data["seq"],
                                      data=json.dumps(event.data)))

    @event_handler("single.*")
    def record_single(self, event):
        self.db.session.add(Entry(event_id=event.event_id, seq=event.data["seq"],
                                  data=json.dumps(event.data)))


def entry_event(seq, **data):
    return {"event_id": f"{seq:032d}", "event_type": "entry.made",
            "timestamp": "2026-11-27T10:00:00+00:00", "source": "test", "version": 1,
            "data": dict(data, seq=seq)}


@pytest.fixture
def config(rabbit_config, make_database_url, database_backend):
    url = make_database_url(database_backend)
    engine = create_engine(normalize_url(url))
    Base.metadata.create_all(engine)
    engine.dispose()
    Ledger.batches, Ledger.pause = [], 0
    return dict(rabbit_config, DB_URIS={"ledger:Base": url}, EVENT_RETRY_DELAYS=[0.2, 0.4],
                HEARTBEAT=5, PREFETCH_COUNT=5)


def url_of(config):
    return config["DB_URIS"]["ledger:Base"]


def entries(config):
    return query(url_of(config), select(Entry).order_by(Entry.seq))


def inbox(config):
    return query(url_of(config), select(InboxRecord))


def start_after_backlog(container_factory, config, plain, bodies):
    """Declare the queue (a first start), stop, publish ``bodies``, start again: a backlog."""
    first = container_factory(Ledger, config)
    first.start()
    first.stop()
    for body in bodies:
        plain.publish("entry.made", body)
    container = container_factory(Ledger, config)
    container.start()
    return container


def test_backlog_is_handled_in_batches_each_event_once_in_order(container_factory, config,
                                                                 plain):
    count = 200
    start_after_backlog(container_factory, config, plain,
                        [entry_event(seq) for seq in range(count)])

    wait_until(lambda: len(entries(config)) == count, timeout=30, message="backlog handled")
    wait_until(lambda: plain.message_count(QUEUE) == 0, message="all acked")
    assert [row.seq for row in entries(config)] == list(range(count))
    assert len(inbox(config)) == count
    batches = Ledger.batches
    assert [seq for batch in batches for seq in batch] == list(range(count))  # oldest first
    assert max(len(batch) for batch in batches) == MAX_BATCH
    assert len(batches) < count / 4  # it batched: not one call per event
    assert plain.message_count(QUEUE + ".dlq") == 0


def test_event_max_batch_caps_every_batch(container_factory, config, plain):
    count = 30
    start_after_backlog(container_factory, dict(config, EVENT_MAX_BATCH=3), plain,
                        [entry_event(seq) for seq in range(count)])

    wait_until(lambda: len(entries(config)) == count, timeout=30, message="backlog handled")
    assert [row.seq for row in entries(config)] == list(range(count))
    assert max(len(batch) for batch in Ledger.batches) == 3


def test_failing_event_is_retried_alone_the_rest_of_its_batch_is_handled_once(
        container_factory, config, plain):
    events = [entry_event(seq, fail=(seq == 7)) for seq in range(20)]
    start_after_backlog(container_factory, config, plain, events)

    _, properties, body = plain.get(QUEUE + ".dlq", timeout=15)
    assert json.loads(body)["data"]["seq"] == 7
    assert properties.headers["x-attempts"] == 3  # first try and two retries
    assert properties.headers["x-exception-type"] == "RuntimeError"
    assert "entry 7 refused on purpose" in properties.headers["x-dead-letter-reason"]
    assert [row.seq for row in entries(config)] == [seq for seq in range(20) if seq != 7]
    assert len(inbox(config)) == 19
    # the failed batch was taken apart: each of its events ran once more, alone
    assert [7] in Ledger.batches and [8] in Ledger.batches
    assert plain.message_count(QUEUE) == 0


def test_an_event_alone_is_settled_at_once_not_run_twice(container_factory, config, plain):
    container_factory(Ledger, config).start()
    plain.publish("entry.made", entry_event(0, fail=True))  # a quiet queue: a batch of one

    _, properties, _ = plain.get(QUEUE + ".dlq", timeout=15)
    assert properties.headers["x-attempts"] == 3
    assert Ledger.batches == [[0], [0], [0]]  # the first try and two retries, nothing more


def test_duplicate_inside_a_batch_has_one_effect(container_factory, config, plain):
    events = [entry_event(seq) for seq in range(10)]
    events.insert(5, entry_event(3))  # the same event again, fresh (a relay republishing)
    start_after_backlog(container_factory, config, plain, events)

    wait_until(lambda: len(entries(config)) == 10 and plain.message_count(QUEUE) == 0,
               timeout=15, message="batch handled")
    eventlet.sleep(0.5)  # a retry (0.2 s) would be back by now
    assert [row.seq for row in entries(config)] == list(range(10))
    assert len(inbox(config)) == 10
    assert plain.message_count(QUEUE + ".dlq") == 0
    assert plain.message_count(QUEUE + ".retry.200ms") == 0


def test_connection_lost_in_the_middle_of_a_backlog_loses_and_doubles_nothing(
        container_factory, config, plain, broker_proxy, database_backend):
    if database_backend != "sqlite":
        pytest.skip("a broker fault: one backend is enough")
    count = 400
    Ledger.pause = 0.02  # a batch takes a while: the cut lands among batches in flight
    start_after_backlog(container_factory, dict(config, AMQP_URI=broker_proxy.amqp_uri), plain,
                        [entry_event(seq) for seq in range(count)])
    wait_until(lambda: len(entries(config)) >= 100, timeout=30, message="a quarter handled")
    broker_proxy.drop_connections()  # unacked and waiting messages go back to the queue
    assert len(entries(config)) < count  # the cut came in the middle

    wait_until(lambda: len(entries(config)) == count and plain.message_count(QUEUE) == 0,
               timeout=60, message="every event handled after the reconnection")
    assert [row.seq for row in entries(config)] == list(range(count))
    assert len(inbox(config)) == count
    assert plain.message_count(QUEUE + ".dlq") == 0


def test_poison_message_among_a_batch_is_dead_lettered_alone(container_factory, config, plain,
                                                             database_backend):
    if database_backend != "sqlite":
        pytest.skip("parsing happens before the database: one backend is enough")
    start_after_backlog(container_factory, config, plain,
                        [entry_event(0), b"{not json", entry_event(1)])

    wait_until(lambda: len(entries(config)) == 2, timeout=15, message="events handled")
    _, properties, body = plain.get(QUEUE + ".dlq")
    assert body == b"{not json"
    assert properties.headers["x-exception-type"] == "InvalidEvent"


def test_each_consumer_gets_its_own_prefetch(container_factory, config, rabbit_manager,
                                             database_backend):
    if database_backend != "sqlite":
        pytest.skip("a broker setting: one backend is enough")
    container = container_factory(Ledger, config)
    container.start()
    vhost = unquote(urlparse(config["AMQP_URI"]).path[1:])

    def prefetch(queue):
        return [consumer["prefetch_count"]
                for consumer in rabbit_manager.get_queue(vhost, queue)["consumer_details"]]

    # a batch in flight while the next fills; PREFETCH_COUNT for the one-event handler
    assert wait_until(lambda: prefetch(QUEUE)) == [2 * MAX_BATCH]
    assert wait_until(lambda: prefetch(SINGLE_QUEUE)) == [5]


@pytest.mark.parametrize("max_batch", [0, -1, 2.5, True, "10"])
def test_max_batch_must_be_a_positive_int(max_batch):
    with pytest.raises(TypeError, match="max_batch"):
        BatchEventHandler("entry.*", max_batch=max_batch)
