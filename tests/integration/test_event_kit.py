"""The event kit against the real broker and real databases (SQLite and PostgreSQL).

Each test gets its own RabbitMQ vhost (nameko's ``rabbit_config`` fixture) and its own databases.
"""
import errno
import json
from datetime import datetime

import eventlet
import pika
import pytest
from nameko.rpc import rpc
from nameko.standalone.events import event_dispatcher
from nameko.testing.services import entrypoint_hook
from sqlalchemy import Integer, String, Text, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.kit import topology
from services.kit import Database, EventDispatcher, InboxRecordMixin, OutboxEventMixin, event_handler
from services.kit.constants import EVENTS_EXCHANGE, HEADER_REPLAYED
from services.kit.db import normalize_url
from services.kit.handlers import EventQueueConsumer
from tests.support.broker import wait_until
from tests.support.db import query

pytestmark = pytest.mark.integration


class Base(DeclarativeBase):
    pass


class OutboxEvent(OutboxEventMixin, Base):
    pass


class InboxRecord(InboxRecordMixin, Base):
    pass


class Note(Base):
    """The publisher's domain row: written in the same transaction as its event."""
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(String(200))


class Effect(Base):
    """What the consumer did: one row per handled event (the effect that must not double)."""
    __tablename__ = "effects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(255))
    data: Mapped[str] = mapped_column(Text)


class NotePublisher:
    name = "publisher"
    db = Database(Base)
    dispatch = EventDispatcher()

    @rpc
    def create_note(self, text):
        self.db.session.add(Note(text=text))
        event = self.dispatch("note.created", {"text": text})
        self.db.session.commit()
        return event.event_id

    @rpc
    def create_note_then_fail(self, text):
        self.db.session.add(Note(text=text))
        self.dispatch("note.created", {"text": text})
        raise ValueError("rolled back before commit")


class Recorder:
    name = "recorder"
    db = Database(Base)

    @event_handler("note.created", "user.registered")
    def record(self, event):
        self.db.session.add(Effect(event_id=event.event_id, event_type=event.event_type,
                                   data=json.dumps(event.data)))

    @event_handler("fragile.*")
    def fragile(self, event):
        if event.data.get("fail"):
            raise RuntimeError("handler failed on purpose")
        self.db.session.add(Effect(event_id=event.event_id, event_type=event.event_type,
                                   data=json.dumps(event.data)))


class Ticket(Base):
    """An effect with its own unique key: a duplicate trips over it before the inbox can tell."""
    __tablename__ = "tickets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)


class TicketOffice:
    name = "tickets"
    db = Database(Base)
    calls = []  # event_ids the handler ran for, in this process

    @event_handler("ticket.*")
    def issue(self, event):
        TicketOffice.calls.append(event.event_id)
        self.db.session.add(Ticket(event_id=event.event_id))
        self.db.session.flush()  # IntegrityError here for a duplicate, before the kit's commit


RECORD_QUEUE = "recorder.record"
TICKET_QUEUE = "tickets.issue"
FRAGILE_QUEUE = "recorder.fragile"


@pytest.fixture
def databases(make_database_url, database_backend):
    """Separate databases for the publisher and the recorder, schema created."""
    urls = {"publisher:Base": make_database_url(database_backend),
            "recorder:Base": make_database_url(database_backend),
            "tickets:Base": make_database_url(database_backend)}
    for url in urls.values():
        engine = create_engine(normalize_url(url))
        Base.metadata.create_all(engine)
        engine.dispose()
    return urls


@pytest.fixture
def config(rabbit_config, databases):
    return dict(rabbit_config, DB_URIS=databases, EVENT_RETRY_DELAYS=[0.2, 0.4],
                OUTBOX_POLL_INTERVAL=0.5, HEARTBEAT=5)


def rows(url, model):
    return query(url, select(model))


def effects(config):
    return rows(config["DB_URIS"]["recorder:Base"], Effect)


def unsent(config):
    return query(config["DB_URIS"]["publisher:Base"], select(func.count())
                 .select_from(OutboxEvent).where(OutboxEvent.sent_at.is_(None)))[0][0]


def test_dispatched_event_reaches_plain_consumer_with_full_envelope(container_factory, config,
                                                                    plain):
    queue = plain.bind_queue("note.*")
    container = container_factory(NotePublisher, config)
    container.start()

    with entrypoint_hook(container, "create_note") as create_note:
        event_id = create_note("hello")

    method, properties, body = plain.get(queue)
    envelope = json.loads(body)
    assert set(envelope) == {"event_id", "event_type", "timestamp", "source", "version", "data"}
    assert envelope["event_id"] == event_id
    assert envelope["event_type"] == "note.created"
    assert envelope["source"] == "publisher"
    assert envelope["version"] == 1
    assert envelope["data"] == {"text": "hello"}
    assert datetime.fromisoformat(envelope["timestamp"]).tzinfo is not None
    assert method.exchange == EVENTS_EXCHANGE
    assert method.routing_key == "note.created"
    assert properties.delivery_mode == 2
    assert properties.content_type == "application/json"
    assert properties.content_encoding == "utf-8"
    assert properties.message_id == event_id
    assert properties.type == "note.created"
    assert properties.app_id == "publisher"
    wait_until(lambda: unsent(config) == 0, message="outbox row marked sent")


def test_rolled_back_transaction_publishes_nothing(container_factory, config, plain):
    queue = plain.bind_queue("#")
    container = container_factory(NotePublisher, config)
    container.start()

    with pytest.raises(ValueError):
        with entrypoint_hook(container, "create_note_then_fail") as create_note_then_fail:
            create_note_then_fail("never")
    with entrypoint_hook(container, "create_note") as create_note:
        create_note("kept")

    _, _, body = plain.get(queue)
    assert json.loads(body)["data"] == {"text": "kept"}
    assert plain.get_all(queue) == []
    assert [note.text for note in rows(config["DB_URIS"]["publisher:Base"], Note)] == ["kept"]


def test_seed_format_event_from_pika_reaches_handler(container_factory, config, plain):
    container = container_factory(Recorder, config)
    container.start()

    # exactly what the seed's publisher sends: three fields, naive timestamp, no content type
    seed_event = {"event_type": "user.registered", "timestamp": "2024-01-15T10:30:00",
                  "data": {"user_id": 123, "email": "user@example.com", "name": "John Doe"}}
    plain.publish("user.registered", seed_event)

    handled = wait_until(lambda: effects(config), message="seed event handled")
    assert len(handled) == 1
    assert handled[0].event_type == "user.registered"
    assert json.loads(handled[0].data) == seed_event["data"]
    assert len(handled[0].event_id) == 32  # derived, stable


def test_same_event_three_times_has_one_effect(container_factory, config, plain):
    container = container_factory(Recorder, config)
    container.start()

    seed_event = {"event_type": "user.registered", "timestamp": "2024-01-15T10:30:00",
                  "data": {"user_id": 1, "email": "a@example.com", "name": "A"}}
    with_id = {"event_id": "e" * 32, "event_type": "note.created",
               "timestamp": "2026-11-26T10:00:00+00:00", "source": "test", "version": 1,
               "data": {"text": "once"}}
    for _ in range(3):
        plain.publish("user.registered", seed_event)  # derived id: same body, same id
        plain.publish("note.created", with_id)
    plain.publish("note.created", dict(with_id, event_id="f" * 32))  # a marker, after them

    wait_until(lambda: any(row.event_id == "f" * 32 for row in effects(config)),
               message="marker event handled")
    handled = effects(config)
    assert sorted(row.event_type for row in handled) == ["note.created", "note.created",
                                                         "user.registered"]
    assert len({row.event_id for row in handled}) == 3
    assert plain.message_count(RECORD_QUEUE) == 0
    assert plain.message_count(RECORD_QUEUE + ".dlq") == 0


def ticket_event(event_id, text="t"):
    return {"event_id": event_id, "event_type": "ticket.sold",
            "timestamp": "2026-11-26T10:00:00+00:00", "source": "test", "version": 1,
            "data": {"text": text}}


def test_duplicate_tripping_over_its_own_unique_key_is_skipped_not_retried(container_factory,
                                                                           config, plain):
    TicketOffice.calls.clear()
    container = container_factory(TicketOffice, config)
    container.start()

    for _ in range(2):  # a fresh duplicate (as the relay republishes after a crash)
        plain.publish("ticket.sold", ticket_event("a" * 32))
    plain.publish("ticket.sold", ticket_event("b" * 32))  # a marker, after them

    wait_until(lambda: len(rows(config["DB_URIS"]["tickets:Base"], Ticket)) == 2
               and plain.message_count(TICKET_QUEUE) == 0, message="tickets issued")
    eventlet.sleep(0.5)  # a retry (0.2 s) would be back by now
    assert sorted(row.event_id for row in rows(config["DB_URIS"]["tickets:Base"], Ticket)) == [
        "a" * 32, "b" * 32]
    assert plain.message_count(TICKET_QUEUE + ".dlq") == 0
    assert plain.message_count(TICKET_QUEUE + ".retry.200ms") == 0
    assert TicketOffice.calls.count("a" * 32) == 2  # it ran, and its effect was rolled back


def test_replayed_event_already_processed_is_skipped_before_the_handler(container_factory,
                                                                         config, plain):
    TicketOffice.calls.clear()
    container = container_factory(TicketOffice, config)
    container.start()

    plain.publish("ticket.sold", ticket_event("c" * 32))
    wait_until(lambda: rows(config["DB_URIS"]["tickets:Base"], Ticket), message="ticket issued")
    replayed = pika.BasicProperties(delivery_mode=2, headers={HEADER_REPLAYED: True})
    plain.publish("ticket.sold", ticket_event("c" * 32), properties=replayed)
    plain.publish("ticket.sold", ticket_event("d" * 32), properties=replayed)  # new: handled

    wait_until(lambda: len(rows(config["DB_URIS"]["tickets:Base"], Ticket)) == 2
               and plain.message_count(TICKET_QUEUE) == 0, message="replay consumed")
    assert TicketOffice.calls == ["c" * 32, "d" * 32]


@pytest.mark.parametrize("poison, reason", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe binary", "not UTF-8"),
    (b'["a", "list"]', "not an object"),
    (b'{"data": {"x": 1}}', "no event_type"),
    (b'{"event_type": "note.created", "data": "text"}', "no data object"),
])
def test_poison_message_is_dead_lettered_and_next_event_handled(container_factory, config, plain,
                                                                poison, reason):
    container = container_factory(Recorder, config)
    container.start()

    plain.publish("note.created", poison,
                  properties=pika.BasicProperties(delivery_mode=2, content_type="application/json"))
    plain.publish("note.created", {"event_type": "note.created", "data": {"text": "after"}})

    wait_until(lambda: effects(config), message="event after the poison handled")
    method, properties, body = plain.get(RECORD_QUEUE + ".dlq")
    assert body == poison
    assert reason in properties.headers["x-dead-letter-reason"]
    assert properties.headers["x-exception-type"] == "InvalidEvent"
    assert properties.headers["x-original-routing-key"] == "note.created"
    assert properties.headers["x-original-queue"] == RECORD_QUEUE
    assert [json.loads(row.data) for row in effects(config)] == [{"text": "after"}]
    assert not container._died.ready()  # the service survived it


def test_failing_handler_is_retried_then_parked_without_blocking(container_factory, config, plain):
    container = container_factory(Recorder, config)
    container.start()

    plain.publish("fragile.thing", {"event_type": "fragile.thing", "data": {"fail": True}})
    plain.publish("fragile.thing", {"event_type": "fragile.thing", "data": {"fail": False}})

    # the good one goes through while the bad one waits in its retry queues
    wait_until(lambda: effects(config), message="good event handled")
    _, properties, body = plain.get(FRAGILE_QUEUE + ".dlq", timeout=15)
    assert json.loads(body)["data"] == {"fail": True}
    headers = properties.headers
    assert headers["x-attempts"] == 3  # first try and two retries (EVENT_RETRY_DELAYS)
    assert headers["x-exception-type"] == "RuntimeError"
    assert "handler failed on purpose" in headers["x-dead-letter-reason"]
    assert headers["x-original-routing-key"] == "fragile.thing"
    assert len(effects(config)) == 1


def test_event_dispatched_while_broker_unreachable_is_relayed_when_back(broker_proxy,
                                                                        container_factory,
                                                                        config, plain):
    queue = plain.bind_queue("note.*")
    container = container_factory(NotePublisher, dict(config, AMQP_URI=broker_proxy.amqp_uri))
    container.start()

    broker_proxy.cut()
    with entrypoint_hook(container, "create_note") as create_note:
        event_id = create_note("while away")  # the write succeeds: the event is in the outbox
    assert unsent(config) == 1
    assert plain.get_all(queue) == []

    broker_proxy.restore()
    _, properties, body = plain.get(queue, timeout=15)
    assert properties.message_id == event_id
    assert json.loads(body)["data"] == {"text": "while away"}
    wait_until(lambda: unsent(config) == 0, message="outbox row marked sent")


def note_event(event_id, text):
    return dict(ticket_event(event_id, text), event_type="note.created")


@pytest.mark.parametrize("database_backend", ["sqlite"])
def test_a_consumer_whose_ack_was_lost_with_its_connection_consumes_again(container_factory,
                                                                          config, plain):
    """When a broker node dies under a worker's ack, py-amqp marks the connection dead at that
    failed write, before the consumer's own read sees the socket close. kombu then reconnected
    by itself, to a connection without consumers, and the service never consumed again (the
    fault matrix's H2, now and then). The consumer must reconnect and consume as after any
    lost connection: the event after the lost ack is handled, the unacked one once."""
    container = container_factory(Recorder, config)
    container.start()
    consumer = next(extension for extension in container.extensions
                    if isinstance(extension, EventQueueConsumer))
    transport = next(iter(consumer._consumers.values())).channel.connection._transport
    write = transport._write

    def write_fails_once(data):  # as the socket of a node that was just killed does
        transport._write = write
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")

    transport._write = write_fails_once  # the next write on it: the first event's ack
    plain.publish("note.created", note_event("a" * 32, "its ack is lost"))
    wait_until(lambda: len(effects(config)) == 1, message="the first event handled")
    assert transport._write is write  # its ack was the write that failed
    eventlet.sleep(1.5)  # the consumer reads with a 1-s timeout: it has looked at its connection
    plain.publish("note.created", note_event("b" * 32, "after the lost ack"))
    wait_until(lambda: len(effects(config)) == 2, timeout=20,
               message="the event after the lost ack handled")
    wait_until(lambda: plain.message_count(RECORD_QUEUE) == 0, message="the queue drained")
    eventlet.sleep(1)  # the first event, redelivered, is skipped as a duplicate
    assert sorted(row.event_id for row in effects(config)) == ["a" * 32, "b" * 32]


def test_event_dispatched_before_consumer_ever_started_waits_for_it(container_factory, config):
    # the subscription is declared by whoever starts first (here: the publisher)
    config = dict(config, EXTRA_SUBSCRIPTIONS={RECORD_QUEUE: ["note.created", "user.registered"]})
    publisher = container_factory(NotePublisher, config)
    publisher.start()
    with entrypoint_hook(publisher, "create_note") as create_note:
        event_id = create_note("early")
    wait_until(lambda: unsent(config) == 0, message="event published")

    recorder = container_factory(Recorder, config)
    recorder.start()
    handled = wait_until(lambda: effects(config), message="early event handled")
    assert [row.event_id for row in handled] == [event_id]


def test_nameko_shell_dispatch_reaches_the_same_handlers(container_factory, config):
    container = container_factory(Recorder, config)
    container.start()

    # what `n.dispatch_event("knowledge_nest", ...)` does in `nameko shell`
    dispatch = event_dispatcher(config)
    dispatch("knowledge_nest", "user.registered",
             {"event_type": "user.registered", "data": {"user_id": 5, "email": "s@example.com",
                                                        "name": "Shell"}})

    handled = wait_until(lambda: effects(config), message="shell event handled")
    assert json.loads(handled[0].data)["name"] == "Shell"


def test_publish_event_helper_reaches_the_same_handlers(container_factory, config):
    from operations.shell import publish_event
    container = container_factory(Recorder, config)
    container.start()

    event_id = publish_event(config, "note.created", {"text": "from the shell"})

    handled = wait_until(lambda: effects(config), message="helper event handled")
    assert handled[0].event_id == event_id


class Flaky:
    """Fails while FLAKY_FAILING is true: to park messages, then to see them handled."""
    name = "recorder"
    db = Database(Base)
    failing = True

    @event_handler("fragile.*")
    def fragile(self, event):
        if Flaky.failing:
            raise RuntimeError("not today")
        self.db.session.add(Effect(event_id=event.event_id, event_type=event.event_type,
                                   data=json.dumps(event.data)))


def test_dlq_commands_list_show_requeue_and_purge(container_factory, config, plain, tmp_path,
                                                  capsys):
    from services.kit.amqp import make_connection
    from operations.cli import main as knowledge_nest
    from operations.dlq import DeadLetters
    from operations.shell import publish_event

    config = dict(config, EVENT_RETRY_DELAYS=[], EXTRA_SUBSCRIPTIONS={FRAGILE_QUEUE: ["fragile.*"]})
    Flaky.failing = True
    container = container_factory(Flaky, config)
    container.start()
    first = publish_event(config, "fragile.one", {"n": 1})
    second = publish_event(config, "fragile.two", {"n": 2})
    plain.publish("fragile.three", b"not json at all")
    dlq = FRAGILE_QUEUE + ".dlq"
    wait_until(lambda: plain.message_count(dlq) == 3, message="three messages parked")

    connection = make_connection(config["AMQP_URI"], heartbeat=0)
    with DeadLetters(connection, config) as dead_letters:
        [row] = [row for row in dead_letters.summary() if row["queue"] == dlq]
        assert row["count"] == 3
        assert row["reasons"]["RuntimeError: not today"] == 2
        assert any("not JSON" in reason for reason in row["reasons"])
        assert row["oldest"] is not None
        assert {message.event_id for message in dead_letters.peek(dlq)} >= {first, second}
        assert dead_letters.count(dlq) == 3  # peeking removes nothing

        Flaky.failing = False
        assert dead_letters.requeue([FRAGILE_QUEUE], event_ids={second}) == 1
        handled = wait_until(lambda: effects(config), message="requeued event handled")
        assert [row.event_id for row in handled] == [second]
        assert dead_letters.count(dlq) == 2

    config_file = tmp_path / "config.yml"
    config_file.write_text(json.dumps(config))  # JSON is YAML
    knowledge_nest(["--config", str(config_file), "dlq", "list"])
    assert dlq in capsys.readouterr().out
    knowledge_nest(["--config", str(config_file), "dlq", "purge", "--queue", FRAGILE_QUEUE,
                    "--yes"])
    assert "purged 2 message(s)" in capsys.readouterr().out
    assert plain.message_count(dlq) == 0


def test_event_nobody_subscribes_to_does_not_hold_up_the_outbox(container_factory, config, plain,
                                                                caplog):
    # Without the catch-all subscriptions (analytics binds "#"), note.created has no queue.
    from contracts import SUBSCRIPTIONS
    config = dict(config, SUBSCRIPTIONS={queue: keys for queue, keys in SUBSCRIPTIONS.items()
                                         if "#" not in keys})
    container = container_factory(NotePublisher, config)
    container.start()
    with entrypoint_hook(container, "create_note") as create_note:
        create_note("into the void")  # no queue is bound to note.created yet
    wait_until(lambda: unsent(config) == 0, message="unroutable event marked sent")
    assert "no queue is bound to it" in caplog.text

    queue = plain.bind_queue("note.*")
    with entrypoint_hook(container, "create_note") as create_note:
        create_note("heard")
    _, _, body = plain.get(queue)
    assert json.loads(body)["data"] == {"text": "heard"}


def test_publisher_pipelines_batches_and_refuses_a_ticket_of_a_lost_connection(rabbit_config,
                                                                                plain):
    from services.kit.amqp import ConfirmedPublisher, PublishFailed, event_message
    queue = plain.bind_queue("pipe.*")

    def batch(tag, size=50):
        return [(EVENTS_EXCHANGE, "pipe.sent",
                 event_message(json.dumps({"n": n}).encode(), f"{tag}{n:031d}", "pipe.sent",
                               "test"))
                for n in range(size)]

    publisher = ConfirmedPublisher(rabbit_config["AMQP_URI"], confirm_timeout=10)
    try:
        first = publisher.publish_nowait(batch("a"))
        second = publisher.publish_nowait(batch("b"))  # before the first is confirmed
        assert publisher.wait_for(first) == []
        assert publisher.wait_for(second) == []
        wait_until(lambda: plain.message_count(queue) == 100, message="both batches routed")

        lost = publisher.publish_nowait(batch("c"))
        publisher.close()  # its confirms can never come now
        with pytest.raises(PublishFailed):
            publisher.wait_for(lost)
        assert publisher.publish_batch(batch("d", size=1)) == []  # a fresh connection
    finally:
        publisher.close()


def test_a_stopping_publisher_relays_its_last_events_without_errors(container_factory, config,
                                                                     caplog):
    # nameko stops the Database before the relay: its last pass must still find an engine
    container = container_factory(NotePublisher, dict(config, OUTBOX_POLL_INTERVAL=3600))
    container.start()
    with entrypoint_hook(container, "create_note") as create_note:
        create_note("just before the stop")
    container.stop()
    assert "failed (AttributeError" not in caplog.text
    assert unsent(config) == 0
