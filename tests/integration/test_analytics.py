"""analytics against the real broker (a vhost per test) and real databases (SQLite, PostgreSQL):
the log holds every event once, the aggregates add up, ``knowledge-nest replay`` rebuilds a fresh
consumer's state and doubles nothing in the others, and ``knowledge-nest create-admin`` creates an
admin through a running auth service."""
import sys
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from nameko.exceptions import IncorrectSignature
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import BigInteger, String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.analytics.models import EventLog
from services.analytics.service import AnalyticsService
from services.auth.service import AuthService
from services.kit import Database, event_handler
from services.kit.db import BigId, InboxRecordMixin, normalize_url
from services.kit.errors import Conflict, Unauthorized, ValidationError
from services.kit.metrics import EVENTS_DUPLICATES
from tests.support import db, processes
from tests.support.broker import wait_until

pytestmark = pytest.mark.integration

ROOT = __file__.rsplit("/tests/", 1)[0]
CHEAP_HASHING = dict(PASSWORD_HASH_TIME_COST=1, PASSWORD_HASH_MEMORY_COST=1024,
                     PASSWORD_HASH_PARALLELISM=1)


# A plain consumer written with the kit, counting every event it handles (no unique key: an effect
# that happened twice shows as two rows), and one that always fails.

class TallyBase(DeclarativeBase):
    pass


class TallyInbox(InboxRecordMixin, TallyBase):
    pass


class Tally(TallyBase):
    __tablename__ = "tally"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[int | None] = mapped_column(BigInteger)


class TallyService:
    name = "tally"
    db = Database(TallyBase)

    @event_handler("user.registered", "course.enrolled")
    def count(self, event):
        self.db.session.add(Tally(event_id=event.event_id, event_type=event.event_type,
                                  user_id=event.data.get("user_id")))


class FailingService:
    name = "failing"
    db = Database(TallyBase)

    @event_handler("course.created")
    def fail(self, event):
        raise RuntimeError("this consumer always fails")


FAIL_ONCE = set()  # event_ids FlakyAnalytics fails on, the first time only


class FlakyAnalytics(AnalyticsService):
    """The real analytics handler, then a failure after its writes on the first try of some
    events: the kit rolls them back and retries through the retry queue. A batch holding one
    fails too (without using up the failure): the kit then tries its events one at a time."""

    from services.analytics.delivery import record_events_handler

    @record_events_handler("#")
    def record_event(self, events):
        super().record_event(events)
        for event in events:
            if event.event_id in FAIL_ONCE:
                if len(events) == 1:
                    FAIL_ONCE.discard(event.event_id)
                raise RuntimeError("failing once after writing")


class AnalyticsReplica(AnalyticsService):
    """A second, empty analytics on its own queue, analytics_replica.record_event."""
    name = "analytics_replica"


# helpers ---------------------------------------------------------------------------------------

@pytest.fixture
def config_for(services_config, make_database_url, make_service_database, database_backend):
    """A config with analytics' database; ``extra`` names more databases: "tally"/"failing"
    (TallyBase's tables) or "analytics_replica" (analytics' migrations)."""

    def make(*extra, **overrides):
        config = services_config("analytics", **overrides)
        for name in extra:
            if name == "analytics_replica":
                config["DB_URIS"][f"{name}:Base"] = make_service_database("analytics",
                                                                          database_backend)
            else:
                url = make_database_url(database_backend)
                engine = create_engine(normalize_url(url))
                TallyBase.metadata.create_all(engine)
                engine.dispose()
                config["DB_URIS"][f"{name}:TallyBase"] = url
        return config

    return make


def query(config, service, statement):
    key = f"{service}:TallyBase" if service == "tally" else f"{service}:Base"
    return db.query(config["DB_URIS"][key], statement)


def log_rows(config, service="analytics"):
    return query(config, service, select(EventLog).order_by(EventLog.id))


def log_count(config, service="analytics"):
    return query(config, service, select(func.count()).select_from(EventLog))[0][0]


def tally_rows(config):
    return query(config, "tally", select(Tally.event_id, Tally.event_type).order_by(Tally.id))


def duplicates_skipped(service, queue):
    return sum(sample.value for metric in EVENTS_DUPLICATES.collect()
               for sample in metric.samples
               if sample.name.endswith("_total") and sample.labels["service"] == service
               and sample.labels["queue"] == queue)


def envelope(event_type, data, at, event_id=None):
    return {"event_id": event_id or uuid.uuid4().hex, "event_type": event_type,
            "timestamp": at.isoformat(), "source": "test", "version": 1, "data": data}


def rpc(config, service, method, *args, **kwargs):
    with ClusterRpcProxy(config, timeout=30) as cluster:
        return getattr(getattr(cluster, service), method)(*args, **kwargs)


def cli(config, tmp_path, *args, stdin=None, timeout=120):
    """``knowledge-nest --config <this test's config> ARGS`` in a subprocess."""
    path = tmp_path / f"config-{uuid.uuid4().hex[:8]}.yml"
    path.write_text(yaml.safe_dump({key: value for key, value in config.items()
                                    if key != "LOGGING"}))
    return processes.run([sys.executable, "-m", "operations.cli", "--config", str(path),
                          *args], input=stdin, cwd=ROOT, timeout=timeout)


def comparable(page):
    """list_events items without what differs between two consumers: the row id, received_at;
    by event_id (events with the same timestamp are in arrival order, which workers vary)."""
    return sorted(({key: value for key, value in item.items() if key not in ("id", "received_at")}
                   for item in page["items"]), key=lambda item: item["event_id"])


def drained(client, *queues):
    return all(client.message_count(queue) == 0 for queue in queues)


# (a) once across redeliveries; retries and parked traffic are not logged again ----------------

def test_each_event_is_logged_once_across_redeliveries_and_retries(
        container_factory, config_for, plain):
    config = config_for("failing")
    container_factory(FlakyAnalytics, config).start()
    container_factory(FailingService, config).start()
    skipped_before = duplicates_skipped("analytics", "analytics.record_event")
    now = datetime.now(timezone.utc)

    tripled = envelope("user.registered", {"user_id": 1, "email": "a@example.com", "name": "A"},
                       now)
    for _ in range(3):
        plain.publish("user.registered", tripled)
    flaky = envelope("course.enrolled", {"enrollment_id": 1, "user_id": 1, "course_id": 5,
                                         "course_title": "Five"}, now)
    FAIL_ONCE.add(flaky["event_id"])
    plain.publish("course.enrolled", flaky)
    # another consumer's retries (default exchange) and parking (the DLX) must not reach '#'
    parked = envelope("course.created", {"course_id": 5, "title": "Five", "instructor_id": 9},
                      now)
    plain.publish("course.created", parked)

    wait_until(lambda: plain.message_count("failing.fail.dlq") == 1, timeout=30,
               message="the failing consumer's event parked after its retries")
    wait_until(lambda: log_count(config) == 3 and not FAIL_ONCE, timeout=30,
               message="three events logged, the flaky one after its retry")
    wait_until(lambda: duplicates_skipped("analytics", "analytics.record_event")
               - skipped_before >= 2, timeout=10, message="the two extra copies skipped")
    wait_until(lambda: drained(plain, "analytics.record_event",
                               "analytics.record_event.retry.200ms",
                               "analytics.record_event.retry.500ms"), timeout=10,
               message="analytics' queues drained")

    rows = log_rows(config)
    assert sorted(row.event_id for row in rows) == sorted(
        [tripled["event_id"], flaky["event_id"], parked["event_id"]])
    by_id = {row.event_id: row for row in rows}
    # the retried one keeps the routing key it was published with, not its retry queue's
    assert by_id[flaky["event_id"]].routing_key == "course.enrolled"
    assert by_id[parked["event_id"]].routing_key == "course.created"
    assert plain.message_count("analytics.record_event.dlq") == 0
    # exactly the two extra copies of the tripled event reached analytics a second time: none
    # of the failing consumer's retries or its parked copy did
    assert duplicates_skipped("analytics", "analytics.record_event") - skipped_before == 2
    summary = rpc(config, "analytics", "summary")
    assert summary["events_total"] == 3
    assert summary["events_by_type"] == {"course.created": 1, "course.enrolled": 1,
                                         "user.registered": 1}
    assert summary["registrations_per_day"] == [{"day": now.date().isoformat(), "count": 1}]
    assert summary["enrollments_per_course"] == [{"course_id": 5, "course_title": "Five",
                                                  "count": 1}]


# (b) aggregates after a known set of events, and (d) list_events over RPC ---------------------

def known_events(now):
    """A known set: envelopes, plus seed-format ones (no event_id, source or version; naive
    timestamp) as the seed's pika clients publish them."""
    minute = now.replace(second=0, microsecond=0)
    yesterday = minute - timedelta(days=1)
    naive = minute.replace(tzinfo=None).isoformat()
    return [
        envelope("user.registered", {"user_id": 1, "email": "a@example.com", "name": "A"},
                 yesterday),
        envelope("user.registered", {"user_id": 2, "email": "b@example.com", "name": "B"},
                 minute),
        {"event_type": "user.registered", "timestamp": naive,
         "data": {"user_id": 3, "email": "c@example.com", "name": "C"}},
        envelope("course.created", {"course_id": 10, "title": "Python", "instructor_id": 1},
                 minute),
        envelope("course.enrolled", {"enrollment_id": 1, "user_id": 2, "course_id": 10,
                                     "course_title": "Python"}, minute),
        {"event_type": "course.enrolled", "timestamp": naive,
         "data": {"enrollment_id": 2, "user_id": 3, "course_id": 10, "course_title": "Python"}},
        envelope("course.enrolled", {"enrollment_id": 3, "user_id": 3, "course_id": 11,
                                     "course_title": "Go"}, minute),
        envelope("review.created", {"review_id": 1, "user_id": 2, "course_id": 10, "rating": 5,
                                    "has_comment": True}, minute),
        {"event_type": "review.created", "timestamp": naive,
         "data": {"review_id": 2, "user_id": 3, "course_id": 10, "rating": 2,
                  "has_comment": False}},
    ]


def publish_all(plain, events):
    for body in events:
        plain.publish(body["event_type"], body)


def test_aggregates_and_the_log_over_rpc(container_factory, config_for, plain):
    config = config_for()
    container_factory(AnalyticsService, config).start()
    now = datetime.now(timezone.utc)
    minute = now.replace(second=0, microsecond=0)
    events = known_events(now)
    publish_all(plain, events)
    publish_all(plain, events[2:3])  # a seed event again: the same derived event_id
    wait_until(lambda: log_count(config) == 9, timeout=30, message="nine events logged")
    wait_until(lambda: drained(plain, "analytics.record_event"), message="queue drained")
    assert log_count(config) == 9

    summary = rpc(config, "analytics", "summary")
    assert summary == {
        "events_total": 9,
        "events_by_type": {"course.created": 1, "course.enrolled": 3, "review.created": 2,
                           "user.registered": 3},
        "registrations_per_day": [
            {"day": (minute - timedelta(days=1)).date().isoformat(), "count": 1},
            {"day": minute.date().isoformat(), "count": 2}],
        "enrollments_per_course": [{"course_id": 10, "course_title": "Python", "count": 2},
                                   {"course_id": 11, "course_title": "Go", "count": 1}],
        "enrollments_in_other_courses": 0,
        "rating_distribution": {"1": 0, "2": 1, "3": 0, "4": 0, "5": 1},
        "events_per_minute": [
            {"minute": minute.isoformat(), "event_type": event_type, "count": count}
            for event_type, count in (("course.created", 1), ("course.enrolled", 3),
                                      ("review.created", 2), ("user.registered", 2))],
    }

    page = rpc(config, "analytics", "list_events")
    assert (page["page"], page["per_page"], page["total"]) == (1, 20, 9)
    newest = page["items"][0]
    assert newest["timestamp"] == minute.isoformat()
    assert page["items"][-1]["timestamp"] == (minute - timedelta(days=1)).isoformat()
    seed = next(item for item in page["items"] if item["data"].get("enrollment_id") == 2)
    assert seed["source"] == "unknown" and seed["version"] == 1 and len(seed["event_id"]) == 32
    assert seed["routing_key"] == "course.enrolled" and seed["received_at"].endswith("+00:00")

    assert rpc(config, "analytics", "list_events", event_type="course.enrolled")["total"] == 3
    assert rpc(config, "analytics", "list_events", user_id=3)["total"] == 4
    assert rpc(config, "analytics", "list_events", user_id=1)["total"] == 1  # not instructor
    assert rpc(config, "analytics", "list_events", course_id=10,
               event_type="review.created")["total"] == 2
    assert rpc(config, "analytics", "list_events",
               until=minute.isoformat())["total"] == 1
    assert rpc(config, "analytics", "list_events", since=minute.isoformat(),
               until=(minute + timedelta(minutes=1)).isoformat())["total"] == 8
    pages = [rpc(config, "analytics", "list_events", page=number, per_page=4)
             for number in (1, 2, 3)]
    assert [len(p["items"]) for p in pages] == [4, 4, 1]
    assert len({item["event_id"] for p in pages for item in p["items"]}) == 9

    for field, kwargs in (("since", {"since": "not a date"}), ("user_id", {"user_id": "3"}),
                          ("per_page", {"per_page": 500}), ("surprise", {"surprise": 1}),
                          ("until", {"since": minute.isoformat(),
                                     "until": (minute - timedelta(days=2)).isoformat()})):
        if field == "surprise":
            with pytest.raises(IncorrectSignature):  # not an argument of list_events at all
                rpc(config, "analytics", "list_events", **kwargs)
            continue
        with pytest.raises(ValidationError) as caught:
            rpc(config, "analytics", "list_events", **kwargs)
        assert field in caught.value.fields
    assert rpc(config, "analytics", "health") == {"service": "analytics", "database": "ok"}


# (c) replay rebuilds a fresh consumer and doubles nothing in the others ------------------------

def test_replay_rebuilds_a_fresh_consumer_and_doubles_nothing(container_factory, config_for,
                                                               plain, tmp_path):
    config = config_for("tally", "analytics_replica")
    container_factory(AnalyticsService, config).start()
    container_factory(TallyService, config).start()
    events = known_events(datetime.now(timezone.utc))
    publish_all(plain, events)
    wait_until(lambda: log_count(config) == 9 and len(tally_rows(config)) == 6, timeout=30,
               message="analytics and tally saw every event live")
    live_tally = tally_rows(config)

    # a new consumer, started after the fact: its queue is bound to '#' now, and empty
    container_factory(AnalyticsReplica, config).start()
    assert log_count(config, "analytics_replica") == 0

    dry = cli(config, tmp_path, "replay", "--since", "2000-01-01T00:00:00Z",
              "--to-queue", "analytics_replica.record_event", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[-1] == (
        "dry run: would replay 9 event(s) to queue analytics_replica.record_event")
    assert plain.message_count("analytics_replica.record_event") == 0

    missing = cli(config, tmp_path, "replay", "--since", "2000-01-01T00:00:00Z",
                  "--to-queue", "no.such.queue")
    assert missing.returncode != 0 and "no queue 'no.such.queue'" in missing.stderr

    done = cli(config, tmp_path, "replay", "--since", "2000-01-01T00:00:00Z",
               "--to-queue", "analytics_replica.record_event")
    assert done.returncode == 0, done.stderr
    assert "replayed 9 event(s) to queue analytics_replica.record_event" in done.stdout
    assert "9/9" in done.stderr  # the progress bar
    wait_until(lambda: log_count(config, "analytics_replica") == 9, timeout=30,
               message="the replica rebuilt from the replay")

    assert rpc(config, "analytics_replica", "summary") == rpc(config, "analytics", "summary")
    everything = dict(per_page=100)
    original = rpc(config, "analytics", "list_events", **everything)
    rebuilt = rpc(config, "analytics_replica", "list_events", **everything)
    assert comparable(rebuilt) == comparable(original)  # same ids, types, keys, data, times
    assert tally_rows(config) == live_tally  # --to-queue reached that queue only

    # to the exchange: every consumer gets everything again and skips it (inbox)
    before = {queue: duplicates_skipped(service, queue) for service, queue in (
        ("analytics", "analytics.record_event"),
        ("analytics_replica", "analytics_replica.record_event"), ("tally", "tally.count"))}
    again = cli(config, tmp_path, "replay", "--since", "2000-01-01T00:00:00Z")
    assert again.returncode == 0, again.stderr
    assert "replayed 9 event(s) to exchange knowledge_nest_events" in again.stdout
    expected = {"analytics.record_event": 9, "analytics_replica.record_event": 9,
                "tally.count": 6}
    for (service, queue) in (("analytics", "analytics.record_event"),
                             ("analytics_replica", "analytics_replica.record_event"),
                             ("tally", "tally.count")):
        wait_until(lambda: duplicates_skipped(service, queue) - before[queue]
                   == expected[queue], timeout=30, message=f"{queue} skipped every replayed one")
    assert log_count(config) == 9 and log_count(config, "analytics_replica") == 9
    assert tally_rows(config) == live_tally
    assert rpc(config, "analytics", "summary")["events_total"] == 9
    assert rpc(config, "analytics_replica", "summary") == rpc(config, "analytics", "summary")


# (e) create-admin over a running auth ----------------------------------------------------------

def test_create_admin_over_a_running_auth(container_factory, services_config, tmp_path):
    config = services_config("auth", **CHEAP_HASHING)
    auth = container_factory(AuthService, config)
    auth.start()
    password = "a long admin passphrase"

    made = cli(config, tmp_path, "create-admin", "--email", "Root@Example.com", "--name", "Root",
               "--password-stdin", stdin=password + "\n")
    assert made.returncode == 0, made.stderr
    user_id = int(made.stdout.strip())
    user = rpc(config, "auth", "get_user", user_id)
    assert (user["email"], user["name"], user["role"]) == ("root@example.com", "Root", "admin")
    assert rpc(config, "auth", "authenticate", "root@example.com", password)["id"] == user_id

    taken = cli(config, tmp_path, "create-admin", "--email", "root@example.com", "--name", "R",
                "--password-stdin", stdin=password + "\n")
    assert taken.returncode != 0 and "already" in taken.stderr.lower()
    weak = cli(config, tmp_path, "create-admin", "--email", "other@example.com", "--name", "O",
               "--password-stdin", stdin="test123\n")
    assert weak.returncode != 0 and "password" in weak.stderr
    with pytest.raises(Conflict):
        rpc(config, "auth", "register", "root@example.com", password, "Root", "admin")

    # auth stopped: a clear message, and the request does not run when auth comes back
    auth.stop()
    late = cli(config, tmp_path, "create-admin", "--email", "late@example.com", "--name", "L",
               "--password-stdin", "--timeout", "1", stdin=password + "\n")
    assert late.returncode != 0
    assert "the auth service did not answer within 1s: is it running?" in late.stderr
    container_factory(AuthService, config).start()
    import eventlet
    eventlet.sleep(2)
    with pytest.raises(Unauthorized):
        rpc(config, "auth", "authenticate", "late@example.com", password)


def test_replay_opens_the_log_read_only(make_service_database, database_backend):
    from services.analytics.replay import count_events, open_log, selection
    engine = open_log(make_service_database("analytics", database_backend))
    try:
        with engine.connect() as connection:
            assert count_events(connection, selection(datetime(2000, 1, 1,
                                                               tzinfo=timezone.utc))) == 0
        with engine.connect() as connection, pytest.raises(Exception,
                                                           match="(?i)read.?only"):
            connection.exec_driver_sql(
                "INSERT INTO event_type_counts (event_type, count) VALUES ('x', 1)")
    finally:
        engine.dispose()
