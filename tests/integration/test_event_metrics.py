"""The kit's event counters (services/kit/metrics.py) against the real broker: a failing handler's
tries, its parked message, a poison message, a redelivered duplicate and a handled event."""
import pika
import pytest
from prometheus_client import REGISTRY

from tests.integration.test_event_kit import (  # noqa: F401 (fixtures)
    FRAGILE_QUEUE, RECORD_QUEUE, Recorder, config, databases, effects,
)
from tests.support.broker import wait_until

pytestmark = pytest.mark.integration


def value(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_failed_dead_lettered_duplicate_and_handled_events_are_counted(container_factory,
                                                                       config, plain):
    fragile = dict(service="recorder", queue=FRAGILE_QUEUE, event_type="fragile.thing")
    record = dict(service="recorder", queue=RECORD_QUEUE, event_type="note.created")
    counters = {
        "failed": ("knowledge_nest_events_failed_total", fragile),
        "parked": ("knowledge_nest_events_dead_lettered_total", dict(fragile, reason="failed")),
        "invalid": ("knowledge_nest_events_dead_lettered_total",
                    dict(record, reason="invalid")),
        "handled": ("knowledge_nest_events_handled_total", record),
        "duplicate": ("knowledge_nest_events_duplicates_skipped_total", record),
    }
    before = {key: value(name, **labels) for key, (name, labels) in counters.items()}

    def moved():
        return {key: value(name, **labels) - before[key]
                for key, (name, labels) in counters.items()}

    container = container_factory(Recorder, config)
    container.start()
    plain.publish("fragile.thing", {"event_type": "fragile.thing", "data": {"fail": True}})
    event = {"event_id": "d" * 32, "event_type": "note.created",
             "timestamp": "2026-11-26T10:00:00+00:00", "source": "test", "version": 1,
             "data": {"text": "twice"}}
    plain.publish("note.created", event)
    wait_until(lambda: effects(config), message="the first copy handled")
    plain.publish("note.created", event)  # a redelivery: same event_id
    plain.publish("note.created", b"{not json", properties=pika.BasicProperties(
        delivery_mode=2, content_type="application/json", type="note.created"))

    wait_until(lambda: moved()["parked"] == 1 and moved()["duplicate"] == 1
               and moved()["invalid"] == 1, timeout=30, interval=0.1,
               message="the parked, duplicate and poison counters moving")
    assert moved() == {"failed": 3, "parked": 1, "invalid": 1, "handled": 1, "duplicate": 1}
