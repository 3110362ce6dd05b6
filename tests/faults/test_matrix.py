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
    import services.kit.outbox as outbox
    ledger = fault_suite()
    for n in range(1, 21):
        enroll(ledger, n)
    ledger.wait_settled()

    broker_proxy.cut()  # 20 more wait in the outbox, to go out in one batch
    for n in range(21, 41):
        enroll(ledger, n)
    crashed = eventlet.Event()
    real_utcnow = outbox.utcnow

    def crash_before_marking_sent():
        if not crashed.ready():
            crashed.send()
        raise RuntimeError("process died after the broker's confirm")

    monkeypatch.setattr(outbox, "utcnow", crash_before_marking_sent)  # the mark-sent step
    broker_proxy.restore()
    crashed.wait()
    ledger.state["course"].kill()  # the process dies with the confirmed rows unmarked
    monkeypatch.setattr(outbox, "utcnow", real_utcnow)
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


def _kill_when(process, database_path, count, kill_signal):
    """Send ``kill_signal`` to ``process`` as soon as its notifications table holds ``count``.

    Watched from a real OS thread, not a greenthread: in a long test session this process's
    hub can be busy long enough for a polling greenthread to miss the window (the consumer
    handles the whole backlog in a second or two), and the kill must land mid-backlog.
    """
    import sqlite3
    threading = eventlet.patcher.original("threading")
    time = eventlet.patcher.original("time")
    outcome = {"killed": False}

    def watch():
        database = sqlite3.connect(database_path, timeout=30)
        try:
            while process.poll() is None:
                handled = database.execute(
                    "SELECT count(*) FROM notifications").fetchone()[0]
                if handled >= count:
                    process.send_signal(kill_signal)
                    outcome["killed"] = True
                    return
                time.sleep(0.002)
        finally:
            database.close()

    watcher = threading.Thread(target=watch, name="f3-killer", daemon=True)
    watcher.start()
    return watcher, outcome


def test_f3_consumer_process_killed_with_sigkill_mid_handling(fault_suite, tmp_path):
    import os
    import signal
    import sys

    from tests.support import processes  # not eventlet's green Popen: see there

    from tests.faults.conftest import ROOT, notification_count
    ledger = fault_suite(with_notification=False)
    for n in range(1, 301):
        enroll(ledger, n)
    config_file = tmp_path / "notification.yml"
    # two workers: slow enough that the kill lands mid-backlog, on a busy machine too
    config_file.write_text(json.dumps(dict(ledger.direct_config, MAIL_BACKEND="log",
                                           max_workers=2, PREFETCH_COUNT=10)))
    command = [os.path.join(os.path.dirname(sys.executable), "nameko"), "run", "--config",
               str(config_file), "services.notification.service"]
    database_path = ledger.notification_db.split("///", 1)[1]
    started = []

    def start():
        log = open(tmp_path / f"notification-{len(started)}.log", "wb")
        process = processes.Popen(command, cwd=ROOT, stdout=log, stderr=processes.STDOUT,
                                  start_new_session=True)
        started.append(process)
        return process

    def log_tail():
        return "".join(path.read_text(errors="replace")[-3000:]
                       for path in sorted(tmp_path.glob("notification-*.log")))

    try:
        for _ in range(3):  # a process that could not even start is started again
            first = start()
            watcher, outcome = _kill_when(first, database_path, 50, signal.SIGKILL)
            wait_until(lambda: not watcher.is_alive(), timeout=120, interval=0.05,
                       message="the consumer process handling 50 of the backlog")
            if outcome["killed"]:
                break
            eventlet.sleep(1)
        assert outcome["killed"], f"the consumer process exited by itself:\n{log_tail()}"
        processes.wait(first, timeout=30)
        assert first.returncode == -signal.SIGKILL
        handled_at_kill = notification_count(ledger)
        assert handled_at_kill < 300, f"it finished before the kill:\n{log_tail()}"
        # (the notifications table holds only this scenario's enrollment confirmations)
        # its unacked messages are back in the queue; those it had committed are redeliveries
        # the inbox must absorb: ready now + committed - all
        eventlet.sleep(1)
        redelivered_done = ledger.plain.message_count(ENROLLED_QUEUE) + handled_at_kill - 300
        start()
        numbers = ledger.wait_settled(timeout=120)
        numbers["duplicates_absorbed"] += max(0, redelivered_done)
    finally:
        for process in started:
            if process.poll() is None:
                process.terminate()
                try:
                    processes.wait(process, timeout=30)
                except processes.TimeoutExpired:
                    process.kill()
                    process.wait()
    check_and_record("F3", f"a `nameko run` notification process SIGKILLed mid-backlog of 300 "
                     f"(after {handled_at_kill} handled), restarted", numbers,
                     succeeded=ledger.succeeded)


def test_f6_consumers_database_unavailable_for_a_while(fault_suite, make_service_database,
                                                       broker_proxy):
    from urllib.parse import urlparse

    from services.kit.amqp import make_connection
    from operations.dlq import DeadLetters
    from tests.support.proxy import TcpProxy
    direct = make_service_database("notification", "postgresql")
    url = urlparse(direct)
    pg_proxy = TcpProxy(url.hostname, url.port or 5432)
    try:
        proxied = url._replace(netloc=f"{url.username}@127.0.0.1:{pg_proxy.port}").geturl()
        ledger = fault_suite(notification_db=(direct, proxied),
                             EVENT_RETRY_DELAYS=[0.5, 1, 2])
        for n in range(1, 21):
            enroll(ledger, n)
        ledger.wait_settled()
        pg_proxy.cut()  # notification's database goes away for 5 s
        for n in range(21, 61):
            enroll(ledger, n)
            eventlet.sleep(0.1)
        eventlet.sleep(1)
        pg_proxy.restore()
        # the last retry is 3.5 s after the first try: what failed until then is parked
        eventlet.sleep(5)
        parked = 0
        for _ in range(3):  # what an operator does: knowledge-nest dlq requeue --queue ...
            connection = make_connection(ledger.direct_config["AMQP_URI"], heartbeat=0)
            with DeadLetters(connection, ledger.direct_config) as dead_letters:
                parked += dead_letters.requeue([ENROLLED_QUEUE])
            wait_until(lambda: ledger.accepted_event_ids() <= set(ledger.effects())
                       or ledger.dead_lettered(), timeout=60, interval=0.5,
                       message="requeued events handled")
            if not ledger.dead_lettered():
                break
        numbers = ledger.wait_settled()
        numbers["dead_lettered"] = parked
    finally:
        pg_proxy.close()
    row = check_and_record("F6", "notification's PostgreSQL unreachable for 5 s during 40 "
                           "writes (retries 0.5/1/2 s; parked ones requeued)", numbers,
                           succeeded=ledger.succeeded)
    assert row["dead_lettered"] <= 40
