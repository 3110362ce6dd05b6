"""EVENT_TTL, EVENT_PRIORITY and QUEUE_TYPE against the real broker; migrate-queues."""
import json

import pytest
from nameko.rpc import rpc
from nameko.testing.services import entrypoint_hook

from services.kit import Database, EventDispatcher
from operations.cli import main as knowledge_nest
from services.kit.topology import QueueArgumentsMismatch
from tests.integration.test_event_kit import (  # noqa: F401 (fixtures)
    RECORD_QUEUE, Base, Recorder, config, databases, effects, unsent,
)
from tests.support.broker import wait_until

pytestmark = pytest.mark.integration


class TypedPublisher:
    name = "publisher"
    db = Database(Base)
    dispatch = EventDispatcher()

    @rpc
    def publish(self, event_type, n):
        event = self.dispatch(event_type, {"n": n})
        self.db.session.commit()
        return event.event_id


def write_config(tmp_path, config):
    path = tmp_path / "config.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return str(path)


def test_expired_event_is_dead_lettered_with_reason_expired(container_factory, config, plain,
                                                            tmp_path, capsys):
    config = dict(config, EVENT_TTL={"note.created": 0.3, "user.registered": None},
                  EXTRA_SUBSCRIPTIONS={RECORD_QUEUE: ["note.created", "user.registered"]})
    publisher = container_factory(TypedPublisher, config)
    publisher.start()
    with entrypoint_hook(publisher, "publish") as publish:
        expiring = publish("note.created", 1)
        lasting = publish("user.registered", 2)
    # nobody consumes: the note expires in the queue, the user event does not
    wait_until(lambda: plain.message_count(RECORD_QUEUE + ".dlq") == 1, timeout=15,
               message="expired event dead-lettered")
    _, properties, body = plain.get(RECORD_QUEUE + ".dlq")
    assert properties.message_id == expiring
    assert properties.headers["x-death"][0]["reason"] == "expired"
    # the test took the copy: put it back for the CLI to see
    plain.channel.basic_publish("knowledge_nest_events.dlx", RECORD_QUEUE, body, properties)
    wait_until(lambda: plain.message_count(RECORD_QUEUE + ".dlq") == 1, message="put back")
    assert plain.message_count(RECORD_QUEUE) == 1
    _, properties, _ = plain.get(RECORD_QUEUE)
    assert properties.message_id == lasting and properties.expiration is None

    knowledge_nest(["--config", write_config(tmp_path, config), "dlq", "list"])
    line = [row for row in capsys.readouterr().out.splitlines()
            if row.startswith(RECORD_QUEUE + ".dlq")][0]
    assert "1x expired" in line


def test_higher_priority_events_are_delivered_first(container_factory, config, plain):
    config = dict(config, EVENT_PRIORITY={"note.created": 1, "user.registered": 9},
                  EXTRA_SUBSCRIPTIONS={RECORD_QUEUE: ["note.created", "user.registered"]})
    publisher = container_factory(TypedPublisher, config)
    publisher.start()
    with entrypoint_hook(publisher, "publish") as publish:
        low = [publish("note.created", n) for n in range(3)]
        high = [publish("user.registered", n) for n in range(3)]
    wait_until(lambda: unsent(config) == 0, message="all published")
    wait_until(lambda: plain.message_count(RECORD_QUEUE) == 6, message="all queued")
    order = [plain.get(RECORD_QUEUE)[1] for _ in range(6)]
    assert [p.message_id for p in order] == high + low
    assert [p.priority for p in order] == [9, 9, 9, 1, 1, 1]


def test_mismatched_queue_fails_clearly_and_migrate_queues_keeps_its_messages(
        container_factory, config, plain, tmp_path, capsys):
    old = dict(config, EXTRA_SUBSCRIPTIONS={RECORD_QUEUE: ["note.created", "user.registered"]})
    publisher = container_factory(TypedPublisher, old)
    publisher.start()
    with entrypoint_hook(publisher, "publish") as publish:
        waiting = [publish("note.created", n) for n in range(5)]
    wait_until(lambda: plain.message_count(RECORD_QUEUE) == 5, message="events queued")
    publisher.stop()

    new = dict(old, EVENT_PRIORITY={"user.registered": 9})
    with pytest.raises(QueueArgumentsMismatch, match="knowledge-nest migrate-queues"):
        container_factory(Recorder, new).start()

    knowledge_nest(["--config", write_config(tmp_path, new), "migrate-queues"])
    out = capsys.readouterr().out
    assert f"{RECORD_QUEUE}: recreated with the configured arguments, 5 message(s)" in out
    knowledge_nest(["--config", write_config(tmp_path, new), "migrate-queues"])
    assert f"{RECORD_QUEUE}: arguments already match" in capsys.readouterr().out

    recorder = container_factory(Recorder, new)
    recorder.start()
    wait_until(lambda: len(effects(new)) == 5, timeout=20, message="kept events handled")
    assert sorted(row.event_id for row in effects(new)) == sorted(waiting)
    plain.publish("user.registered", {"event_type": "user.registered", "data": {"n": 6}})
    wait_until(lambda: len(effects(new)) == 6, message="new event after migration handled")


def test_quorum_consumer_queues_deliver_events(container_factory, config, plain):
    config = dict(config, QUEUE_TYPE="quorum")
    recorder = container_factory(Recorder, config)
    recorder.start()
    plain.publish("note.created", {"event_type": "note.created", "data": {"text": "q"}})
    wait_until(lambda: effects(config), timeout=15, message="event via a quorum queue handled")
