"""The fault matrix (docs/reliability.md): every accepted write's event has its effect exactly
once, whatever happens to connections, processes and messages in between."""
import json

import eventlet
import pika
import pytest

from services.course.models import OutboxEvent
from tests.faults.conftest import (
    ENROLLED_QUEUE, check_and_record, enroll, query,
)
from tests.support.broker import wait_until
from sqlalchemy import select

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def test_f1_every_connection_dropped_twice_during_a_stream_of_writes(fault_suite, broker_proxy):
    ledger = fault_suite()
    for n in range(1, 121):
        enroll(ledger, n)
        if n in (40, 80):
            broker_proxy.drop_connections()  # consumers, relay, failure router: all of them
        eventlet.sleep(0.01)
    numbers = ledger.wait_settled()
    check_and_record("F1", "every connection (consumers and publishers) dropped twice during "
                     "120 writes", numbers, succeeded=ledger.succeeded)


def test_f2_broker_unreachable_for_ten_seconds_while_writes_arrive(fault_suite, broker_proxy):
    ledger = fault_suite()
    for n in range(1, 21):
        enroll(ledger, n)
    broker_proxy.cut()
    deadline = eventlet.hubs.get_hub().clock() + 10
    n = 20
    while eventlet.hubs.get_hub().clock() < deadline:
        n += 1
        enroll(ledger, n)  # the outbox takes it; nothing can be published meanwhile
        eventlet.sleep(0.1)
    broker_proxy.restore()
    for n in range(n + 1, n + 21):
        enroll(ledger, n)
    numbers = ledger.wait_settled()
    check_and_record("F2", "broker unreachable for 10 s while writes arrive (writes go on: "
                     "outbox)", numbers, succeeded=ledger.succeeded)


def test_f4_poison_message_is_parked_and_the_stream_goes_on(fault_suite):
    ledger = fault_suite()
    for n in range(1, 31):
        enroll(ledger, n)
    ledger.plain.publish("course.enrolled", b"{this is not json",
                         properties=pika.BasicProperties(delivery_mode=2))
    ledger.plain.publish("course.enrolled", {"event_type": "course.enrolled",
                                             "data": {"enrollment_id": "x"}})
    for n in range(31, 61):
        enroll(ledger, n)
    wait_until(lambda: ledger.dead_lettered() == 2, timeout=30, message="poison parked")
    numbers = ledger.wait_settled()
    row = check_and_record("F4", "a non-JSON body and an event with unusable data amid 60 "
                           "writes", numbers, succeeded=ledger.succeeded)
    assert row["dead_lettered"] == 2


def test_f5_same_event_three_times_has_one_effect(fault_suite):
    ledger = fault_suite()
    for n in range(1, 41):
        enroll(ledger, n)
    ledger.wait_settled()
    bodies = query(ledger.course_db, select(OutboxEvent.event_id, OutboxEvent.body))
    for _ in range(2):  # twice more: three copies of each event in all
        for event_id, body in bodies:
            ledger.plain.publish("course.enrolled", body.encode(), properties=pika.BasicProperties(
                delivery_mode=2, message_id=event_id, content_type="application/json"))
    wait_until(lambda: ledger.plain.message_count(ENROLLED_QUEUE) == 0, timeout=60,
               message="replays consumed")
    eventlet.sleep(1)
    numbers = ledger.wait_settled()
    row = check_and_record("F5", "each of 40 events delivered three times", numbers,
                           succeeded=ledger.succeeded)
    assert row["duplicates_absorbed"] >= 80


def test_f7_events_published_before_their_consumer_ever_started(fault_suite):
    ledger = fault_suite(with_notification=False)
    for n in range(1, 61):
        enroll(ledger, n)
    wait_until(lambda: query(ledger.course_db, select(OutboxEvent.id)
                             .where(OutboxEvent.sent_at.is_(None))) == [], timeout=30,
               message="all published")
    assert ledger.plain.message_count(ENROLLED_QUEUE) == 60  # waiting for a consumer
    ledger.state["notification"] = ledger.start_notification()
    numbers = ledger.wait_settled()
    check_and_record("F7", "60 events published before their consumer first started", numbers,
                     succeeded=ledger.succeeded)


def test_f8_relay_killed_between_confirm_and_marking_sent(fault_suite, broker_proxy,
                                                         monkeypatch):
    import services.kit.events as events
    ledger = fault_suite()
    for n in range(1, 21):
        enroll(ledger, n)
    ledger.wait_settled()

    broker_proxy.cut()  # 20 more wait in the outbox, to go out in one batch
    for n in range(21, 41):
        enroll(ledger, n)
    crashed = eventlet.Event()
    real_utcnow = events.utcnow

    def crash_before_marking_sent():
        if not crashed.ready():
            crashed.send()
        raise RuntimeError("process died after the broker's confirm")

    monkeypatch.setattr(events, "utcnow", crash_before_marking_sent)  # the mark-sent step
    broker_proxy.restore()
    crashed.wait()
    ledger.state["course"].kill()  # the process dies with the confirmed rows unmarked
    monkeypatch.setattr(events, "utcnow", real_utcnow)
    unsent = query(ledger.course_db, select(OutboxEvent.id).where(OutboxEvent.sent_at.is_(None)))
    assert len(unsent) == 20
    ledger.drain_tap()
    assert sum(ledger.tapped.values()) >= 40  # the broker had confirmed and routed them

    ledger.state["course"] = ledger.start_course()  # its relay republishes them
    wait_until(lambda: not query(ledger.course_db, select(OutboxEvent.id)
                                 .where(OutboxEvent.sent_at.is_(None))), timeout=30,
               message="republished and marked sent")
    for n in range(41, 61):
        enroll(ledger, n)
    numbers = ledger.wait_settled()
    row = check_and_record("F8", "the relay killed after the broker confirmed a batch of 20, "
                           "before marking it sent; restarted", numbers,
                           succeeded=ledger.succeeded)
    assert row["duplicates_absorbed"] >= 20
