"""The fault matrix: the real course and notification services on the real broker (this test's
vhost), through a TCP proxy the test cuts, with their own migrated databases.

Writes are ``course.enroll`` calls (each one commits an enrollment and its ``course.enrolled``
event); the effect is notification's ``enrollment_confirmed`` notification. A ``tap`` queue bound
to ``course.enrolled`` receives one copy of every message the broker routed, so duplicates sent
are counted by the broker, not by the code under test. ``Ledger.measure()`` counts everything
from the databases and the queues.

RELIABILITY_RESULTS=<file.json>: each scenario adds its row there (``make reliability-report``).
"""
import json
import os
from collections import Counter

import pytest
from sqlalchemy import create_engine, func, select

from services.course.models import Course, Enrollment, OutboxEvent
from services.course.service import CourseService
from services.kit.db import normalize_url
from services.notification.models import Contact, Notification
from services.notification.service import NotificationService
from tests.support.broker import PlainClient, wait_until
from tests.support.db import query

ENROLLED_QUEUE = "notification.confirm_enrollment"
TAP_QUEUE = "faults.tap.course_enrolled"
USERS = 400


@pytest.fixture
def database_backend():
    """The matrix runs on SQLite (each service's own file), to stay within its time budget."""
    return "sqlite"




def insert(url, *rows):
    from sqlalchemy.orm import Session
    engine = create_engine(normalize_url(url))
    try:
        with Session(engine) as session:
            session.add_all(rows)
            session.commit()
    finally:
        engine.dispose()


class Ledger:
    """Ground truth of one scenario: the two databases and the broker's queues."""

    def __init__(self, config, plain):
        self.config = config
        self.plain = plain
        self.course_db = config["DB_URIS"]["course:Base"]
        self.notification_db = config["DB_URIS"]["notification:Base"]
        self.attempted = 0
        self.succeeded = 0
        self.tapped = Counter()  # event_id -> copies the broker routed

    def drain_tap(self):
        for _, properties, _ in self.plain.get_all(TAP_QUEUE):
            if properties.message_id:  # not a poison message a test sent itself
                self.tapped[properties.message_id] += 1

    def accepted_event_ids(self):
        return {row.event_id for row in query(
            self.course_db, select(OutboxEvent.event_id)
            .where(OutboxEvent.event_type == "course.enrolled"))}

    def effects(self):
        return Counter(row.event_id for row in query(
            self.notification_db, select(Notification.event_id)
            .where(Notification.kind == "enrollment_confirmed")))

    def dead_lettered(self):
        return self.plain.message_count(ENROLLED_QUEUE + ".dlq")

    def measure(self):
        self.drain_tap()
        accepted = self.accepted_event_ids()
        enrollments = query(self.course_db, select(func.count()).select_from(Enrollment))[0][0]
        sent = query(self.course_db, select(func.count()).select_from(OutboxEvent)
                     .where(OutboxEvent.sent_at.is_not(None)))[0][0]
        effects = self.effects()
        return {
            "attempted": self.attempted,
            "accepted": enrollments,
            "events_published": sent,
            "copies_routed": sum(self.tapped.values()),
            "delivered": len(set(effects) & accepted),
            "duplicates_absorbed": sum(self.tapped.values()) - len(self.tapped),
            "dead_lettered": self.dead_lettered(),
            "lost": len(accepted - set(effects)),
            "doubled_effects": sum(count - 1 for count in effects.values()),
            "_accepted_events": len(accepted),
        }

    def wait_settled(self, timeout=90):
        """Until every accepted event had its effect (or the timeout: then it is measured)."""
        try:
            wait_until(lambda: self.accepted_event_ids() <= set(self.effects()), timeout=timeout,
                       interval=0.5, message="every accepted event handled")
        except AssertionError:
            pass
        return self.measure()


def check_and_record(name, description, numbers, **extra):
    """The invariants every scenario must meet, then its row in RELIABILITY_RESULTS."""
    row = dict(numbers, **extra)
    accepted_events = row.pop("_accepted_events")
    path = os.environ.get("RELIABILITY_RESULTS")
    if path:
        results = {}
        if os.path.exists(path):
            with open(path) as results_file:
                results = json.load(results_file)
        results[name] = dict(row, description=description)
        with open(path, "w") as results_file:
            json.dump(results, results_file, indent=2, sort_keys=True)
    assert row["accepted"] == row["succeeded"], row  # a write that answered OK is in the DB
    assert accepted_events == row["accepted"], row  # each enrollment saved its event
    assert row["lost"] == 0, row
    assert row["doubled_effects"] == 0, row
    assert row["delivered"] == row["accepted"], row
    return row


@pytest.fixture
def fault_suite(services_config, container_factory, broker_proxy, rabbit_config):
    """``fault_suite(with_notification=True, **config)`` -> (ledger, start course, start
    notification, enroll(user_id)). Services reach the broker only through ``broker_proxy``."""
    plains = []

    def make(with_notification=True, notification_db=None, **overrides):
        config = services_config("course", "notification", MAIL_BACKEND="log",
                                 MAIL_RETRY_INTERVAL=0.3, **overrides)
        proxied = dict(config, AMQP_URI=broker_proxy.amqp_uri)
        if notification_db:  # (direct URL, URL the service uses)
            config["DB_URIS"]["notification:Base"] = notification_db[0]
            proxied["DB_URIS"] = dict(config["DB_URIS"],
                                      **{"notification:Base": notification_db[1]})
        insert(config["DB_URIS"]["course:Base"],
               Course(id=1, title="Fault Tolerance 101", description="d", instructor_id=999))
        insert(config["DB_URIS"]["notification:Base"],
               *[Contact(user_id=n, email=f"u{n}@example.com", name=f"User {n}")
                 for n in range(1, USERS + 1)])
        plain = PlainClient(rabbit_config["AMQP_URI"])
        plains.append(plain)
        plain.channel.exchange_declare("knowledge_nest_events", exchange_type="topic",
                                       durable=True)
        plain.channel.queue_declare(TAP_QUEUE, durable=False, auto_delete=False)
        plain.channel.queue_bind(TAP_QUEUE, "knowledge_nest_events", routing_key="course.enrolled")
        ledger = Ledger(config, plain)

        def start_course():
            container = container_factory(CourseService, proxied)
            container.start()
            return container

        def start_notification():
            container = container_factory(NotificationService, proxied)
            container.start()
            return container

        state = {"course": start_course()}
        if with_notification:
            state["notification"] = start_notification()
        ledger.state = state
        ledger.start_course = start_course
        ledger.start_notification = start_notification
        ledger.proxied_config = proxied
        ledger.direct_config = config
        return ledger

    yield make
    for plain in plains:
        plain.close()


def enroll(ledger, user_id):
    """One write through course's real entrypoint; True if it was accepted."""
    from nameko.testing.services import entrypoint_hook
    ledger.attempted += 1
    try:
        with entrypoint_hook(ledger.state["course"], "enroll") as call:
            call(user_id, 1)
    except Exception:
        return False
    ledger.succeeded += 1
    return True


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def notification_count(ledger):
    return query(ledger.notification_db, select(func.count()).select_from(Notification)
                 .where(Notification.kind == "enrollment_confirmed"))[0][0]
