"""analytics' pure logic on a real in-memory SQLite database: the log, the aggregates, the filters,
the routing key it records, and replay's envelope, selection and progress bar."""
import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, select

from services.analytics import commands, replay
from services.analytics.delivery import original_routing_key
from services.analytics.models import Base, EventLog
from services.kit.envelope import Event, parse_event
from services.kit.errors import ValidationError
from tests.support.db import in_memory_session

T0 = datetime(2026, 11, 26, 10, 35, 0, 123456, tzinfo=timezone.utc)


def event(event_type, data, at=T0, event_id=None, source="test"):
    kwargs = {"event_id": event_id} if event_id else {}
    return Event(event_type=event_type, data=data, timestamp=at, source=source, **kwargs)


@pytest.fixture
def session():
    with in_memory_session(Base.metadata) as session:
        yield session


def record_all(session, events):
    for item in events:
        commands.record(session, item, item.event_type)
    session.commit()


KNOWN_EVENTS = [
    event("user.registered", {"user_id": 1, "email": "a@example.com", "name": "A"}),
    event("user.registered", {"user_id": 2, "email": "b@example.com", "name": "B"},
          at=T0 + timedelta(minutes=1)),
    event("user.registered", {"user_id": 3, "email": "c@example.com", "name": "C"},
          at=T0 + timedelta(days=1)),
    event("course.created", {"course_id": 10, "title": "Python", "instructor_id": 1}),
    event("course.enrolled", {"enrollment_id": 1, "user_id": 2, "course_id": 10,
                              "course_title": "Python"}),
    event("course.enrolled", {"enrollment_id": 2, "user_id": 3, "course_id": 10,
                              "course_title": "Python"}),
    event("course.enrolled", {"enrollment_id": 3, "user_id": 3, "course_id": 11,
                              "course_title": "Go"}),
    event("review.created", {"review_id": 1, "user_id": 2, "course_id": 10, "rating": 5,
                             "has_comment": True}),
    event("review.created", {"review_id": 2, "user_id": 3, "course_id": 10, "rating": 3,
                             "has_comment": False}),
    event("review.created", {"review_id": 3, "user_id": 3, "course_id": 11, "rating": 5,
                             "has_comment": False}),
]


def test_summary_stays_bounded_however_many_courses_and_days(session):
    days = commands.SUMMARY_DAYS + 20
    events = [Event(event_type="user.registered", data={"user_id": day, "email": f"u{day}@x.org",
                                                        "name": "U"},
                    timestamp=T0 - timedelta(days=day)) for day in range(days)]
    courses = commands.SUMMARY_TOP_COURSES + 15
    for course_id in range(1, courses + 1):  # course n has n enrollments
        events += [Event(event_type="course.enrolled",
                         data={"enrollment_id": course_id * 1000 + n, "user_id": n,
                               "course_id": course_id, "course_title": f"C{course_id}"},
                         timestamp=T0) for n in range(course_id)]
    record_all(session, events)

    summary = commands.summary(session, now=T0)

    top = summary["enrollments_per_course"]
    assert [row["course_id"] for row in top] == list(range(courses, courses - 10, -1))
    total = courses * (courses + 1) // 2
    assert summary["enrollments_in_other_courses"] == total - sum(row["count"] for row in top)
    assert summary["events_by_type"]["course.enrolled"] == total
    assert len(summary["registrations_per_day"]) == commands.SUMMARY_DAYS
    assert summary["registrations_per_day"][-1]["day"] == T0.date().isoformat()


def test_aggregates_after_a_known_set_of_events(session):
    record_all(session, KNOWN_EVENTS)
    summary = commands.summary(session, now=T0 + timedelta(minutes=5))

    assert summary["events_total"] == 10
    assert summary["events_by_type"] == {"course.created": 1, "course.enrolled": 3,
                                         "review.created": 3, "user.registered": 3}
    assert summary["registrations_per_day"] == [{"day": "2026-11-26", "count": 2},
                                                {"day": "2026-11-27", "count": 1}]
    assert summary["enrollments_per_course"] == [
        {"course_id": 10, "course_title": "Python", "count": 2},
        {"course_id": 11, "course_title": "Go", "count": 1}]
    assert summary["rating_distribution"] == {"1": 0, "2": 0, "3": 1, "4": 0, "5": 2}
    # the last 60 minutes by event time: the next day's registration is outside
    assert summary["events_per_minute"] == [
        {"minute": "2026-11-26T10:35:00+00:00", "event_type": "course.created", "count": 1},
        {"minute": "2026-11-26T10:35:00+00:00", "event_type": "course.enrolled", "count": 3},
        {"minute": "2026-11-26T10:35:00+00:00", "event_type": "review.created", "count": 3},
        {"minute": "2026-11-26T10:35:00+00:00", "event_type": "user.registered", "count": 1},
        {"minute": "2026-11-26T10:36:00+00:00", "event_type": "user.registered", "count": 1}]
    assert commands.summary(session, now=T0 + timedelta(hours=2))["events_per_minute"] == []


def test_a_batch_counts_as_its_events_one_by_one(session):
    """record_all merges a batch's counts per aggregate row; the summary is the one-by-one one,
    on top of what earlier events counted, and an event already logged counts nothing."""
    record_all(session, KNOWN_EVENTS[:4])
    untitled = event("course.enrolled", {"enrollment_id": 4, "user_id": 1, "course_id": 11})
    batch = KNOWN_EVENTS[4:] + [KNOWN_EVENTS[0], untitled]
    rows = commands.record_all(session, batch, {KNOWN_EVENTS[5].event_id: "course.enrolled.eu"})
    session.commit()

    assert [row is None for row in rows] == [False] * 6 + [True, False]
    assert session.execute(select(EventLog.routing_key).where(
        EventLog.event_id == KNOWN_EVENTS[5].event_id)).scalar_one() == "course.enrolled.eu"
    summary = commands.summary(session, now=T0 + timedelta(minutes=5))
    assert summary["events_total"] == 11
    assert summary["events_by_type"] == {"course.created": 1, "course.enrolled": 4,
                                         "review.created": 3, "user.registered": 3}
    # the title is kept where an event has none, as one by one
    assert summary["enrollments_per_course"] == [
        {"course_id": 11, "course_title": "Go", "count": 2},
        {"course_id": 10, "course_title": "Python", "count": 2}]
    assert summary["rating_distribution"] == {"1": 0, "2": 0, "3": 1, "4": 0, "5": 2}
    assert summary["events_per_minute"][1] == {
        "minute": "2026-11-26T10:35:00+00:00", "event_type": "course.enrolled", "count": 4}


def test_an_empty_log_summarises_to_zeros(session):
    assert commands.summary(session) == {
        "events_total": 0, "events_by_type": {}, "registrations_per_day": [],
        "enrollments_per_course": [], "enrollments_in_other_courses": 0,
        "rating_distribution": {str(n): 0 for n in range(1, 6)}, "events_per_minute": []}


def test_an_event_already_in_the_log_is_not_logged_or_counted_again(session):
    first = event("review.created", {"review_id": 1, "user_id": 2, "course_id": 10,
                                     "rating": 4}, event_id="e1")
    assert commands.record(session, first, "review.created") is not None
    assert commands.record(session, first, "review.created") is None
    session.commit()
    assert session.execute(select(EventLog)).scalars().all()[0].event_id == "e1"
    assert len(session.execute(select(EventLog)).all()) == 1
    assert commands.summary(session)["rating_distribution"]["4"] == 1


def test_seed_format_events_are_logged_and_counted(session):
    body = json.dumps({"event_type": "course.enrolled", "timestamp": "2026-11-26T10:35:00",
                       "data": {"user_id": 5, "course_id": 7, "course_title": "Seeds"}})
    seed = parse_event(body.encode())
    record_all(session, [seed])
    [row] = session.execute(select(EventLog)).scalars().all()
    assert row.event_id == seed.event_id and row.source == "unknown" and row.version == 1
    assert (row.user_id, row.course_id) == (5, 7)
    assert commands.summary(session)["enrollments_per_course"] == [
        {"course_id": 7, "course_title": "Seeds", "count": 1}]


def test_odd_data_is_logged_but_not_counted_where_it_does_not_fit(session):
    record_all(session, [
        event("review.created", {"rating": 9, "course_id": "ten"}),
        event("review.created", {"rating": True}),
        event("course.enrolled", {"user_id": 1}),
        event("user.registered", {"user_id": 2**70}),
        event("something.else", {"user_id": 4}),
    ])
    summary = commands.summary(session)
    assert summary["events_total"] == 5
    assert summary["rating_distribution"] == {str(n): 0 for n in range(1, 6)}
    assert summary["enrollments_per_course"] == []
    rows = session.execute(select(EventLog).order_by(EventLog.id)).scalars().all()
    assert [(row.user_id, row.course_id) for row in rows] == [
        (None, None), (None, None), (1, None), (None, None), (4, None)]


def test_the_instructor_of_a_new_course_is_not_its_user(session):
    record_all(session, [event("course.created", {"course_id": 3, "title": "T",
                                                  "instructor_id": 9})])
    assert commands.list_events(session, user_id=9)["total"] == 0
    assert commands.list_events(session, course_id=3)["total"] == 1


def test_list_events_filters_pages_and_orders_newest_first(session):
    record_all(session, KNOWN_EVENTS)
    everything = commands.list_events(session, per_page=100)
    assert everything["total"] == 10
    stamps = [item["timestamp"] for item in everything["items"]]
    assert stamps == sorted(stamps, reverse=True)
    item = everything["items"][0]
    assert set(item) == {"id", "event_id", "event_type", "routing_key", "source", "version",
                         "timestamp", "received_at", "data"}
    assert item["timestamp"] == "2026-11-27T10:35:00.123456+00:00"
    assert item["received_at"].endswith("+00:00") and item["data"]["user_id"] == 3

    assert commands.list_events(session, event_type="review.created")["total"] == 3
    assert commands.list_events(session, user_id=3)["total"] == 5
    assert commands.list_events(session, course_id=10, event_type="course.enrolled")["total"] == 2
    assert commands.list_events(session, since="2026-11-27T00:00:00Z")["total"] == 1
    assert commands.list_events(session, until="2026-11-26T10:36:00+00:00")["total"] == 8
    # no offset: UTC; another offset is converted
    assert commands.list_events(session, since="2026-11-26T10:36:00",
                                until="2026-11-26T12:00:00+01:00")["total"] == 1

    first = commands.list_events(session, page=1, per_page=4)
    third = commands.list_events(session, page=3, per_page=4)
    assert (first["page"], first["per_page"], first["total"]) == (1, 4, 10)
    assert len(first["items"]) == 4 and len(third["items"]) == 2
    ids = [i["id"] for p in (1, 2, 3)
           for i in commands.list_events(session, page=p, per_page=4)["items"]]
    assert sorted(ids) == sorted(i["id"] for i in everything["items"])


@pytest.mark.parametrize("field, kwargs", [
    ("since", {"since": "yesterday"}),
    ("since", {"since": 12345}),
    ("until", {"until": "2026-13-01T00:00:00"}),
    ("until", {"since": "2026-11-27T00:00:00Z", "until": "2026-11-26T00:00:00Z"}),
    ("since", {"since": "0001-01-01T00:00:00+01:00"}),  # before the first UTC moment
    ("user_id", {"user_id": "7"}),
    ("user_id", {"user_id": 0}),
    ("course_id", {"course_id": 1.5}),
    ("event_type", {"event_type": ""}),
    ("event_type", {"event_type": 3}),
    ("page", {"page": 0}),
    ("per_page", {"per_page": 101}),
])
def test_list_events_refuses_bad_arguments_naming_the_field(session, field, kwargs):
    with pytest.raises(ValidationError) as caught:
        commands.list_events(session, **kwargs)
    assert field in caught.value.fields


@pytest.mark.parametrize("headers, exchange, routing_key, expected", [
    ({}, "knowledge_nest_events", "user.registered", "user.registered"),
    ({}, "auth.events", "user.registered", "user.registered"),  # nameko shell's exchange
    # a retry comes back through the default exchange, the kit's header names the original
    ({"x-original-routing-key": "course.enrolled"}, "", "analytics.record_event",
     "course.enrolled"),
    ({}, "", "analytics.record_event", None),  # e.g. dlq requeue: unknown, the type is used
])
def test_the_routing_key_recorded_is_the_one_it_was_published_with(headers, exchange,
                                                                  routing_key, expected):
    assert original_routing_key(headers, exchange, routing_key) == expected


def test_without_a_routing_key_the_event_type_is_recorded(session):
    commands.record(session, event("user.registered", {"user_id": 1}), None)
    session.commit()
    assert session.execute(select(EventLog.routing_key)).scalar_one() == "user.registered"


# replay ------------------------------------------------------------------------------------

@pytest.fixture
def log_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'analytics.db'}"
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    from sqlalchemy.orm import Session
    with Session(engine) as session:
        for index, item in enumerate(KNOWN_EVENTS):
            commands.record(session, item, f"key.{index}")
        session.commit()
    engine.dispose()
    return url


def test_replay_selects_in_log_order_by_timestamp_and_type(log_file):
    engine = replay.open_log(log_file)
    try:
        with engine.connect() as connection:
            conditions = replay.selection(T0, T0 + timedelta(days=1),
                                          ("user.registered", "review.created"))
            assert replay.count_events(connection, conditions) == 5
            batches = list(replay.iter_events(connection, conditions, batch_size=2))
            assert [len(batch) for batch in batches] == [2, 2, 1]
            ids = [row.id for batch in batches for row in batch]
            assert ids == sorted(ids)
            assert [row.event_type for batch in batches for row in batch] == [
                "user.registered", "user.registered", "review.created", "review.created",
                "review.created"]
    finally:
        engine.dispose()


def test_the_log_is_opened_read_only(log_file):
    engine = replay.open_log(log_file)
    try:
        with engine.connect() as connection, pytest.raises(Exception, match="readonly"):
            connection.exec_driver_sql("DELETE FROM event_log")
    finally:
        engine.dispose()


def test_replay_says_what_is_missing(tmp_path):
    with pytest.raises(replay.ReplayError, match="no analytics database"):
        replay.open_log(f"sqlite:///{tmp_path / 'nothing.db'}")
    assert not (tmp_path / "nothing.db").exists()
    create_engine(f"sqlite:///{tmp_path / 'empty.db'}").connect().close()
    with pytest.raises(replay.ReplayError, match="knowledge-nest migrate analytics"):
        replay.open_log(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(replay.ReplayError, match="no analytics database configured"):
        replay.replay({"DB_URIS": {}}, T0)
    with pytest.raises(replay.ReplayError, match="--until is before --since"):
        replay.replay({"DB_URIS": {}}, T0, T0 - timedelta(seconds=1))


def test_dry_run_lists_and_counts_without_a_broker(log_file):
    out = io.StringIO()
    count = replay.replay({"DB_URIS": {"analytics:Base": log_file}}, T0,
                          event_types=("course.enrolled",), dry_run=True, out=out)
    lines = out.getvalue().splitlines()
    assert count == 3 and len(lines) == 4
    assert lines[-1] == "dry run: would replay 3 event(s) to exchange knowledge_nest_events"
    assert all("\tcourse.enrolled\t" in line for line in lines[:3])


def test_a_replayed_message_carries_the_original_envelope(log_file):
    engine = replay.open_log(log_file)
    try:
        with engine.connect() as connection:
            [[row]] = list(replay.iter_events(
                connection, replay.selection(T0, event_types=("course.created",))))
    finally:
        engine.dispose()
    message = replay.replay_message(row, lambda event_type: {"priority": 3}, "when")
    original = KNOWN_EVENTS[3]
    assert json.loads(message.body) == json.loads(original.to_json())
    assert parse_event(message.body) == original
    properties = message.properties
    assert properties["message_id"] == original.event_id
    assert properties["type"] == "course.created" and properties["app_id"] == "test"
    assert properties["delivery_mode"] == 2 and properties["priority"] == 3
    assert properties["content_type"] == "application/json"
    assert properties["application_headers"] == {"x-replayed": "when",
                                                 "x-original-routing-key": "key.3"}


# admin --------------------------------------------------------------------------------------

def test_the_public_register_refuses_the_admin_role():
    import marshmallow

    from gateway.schemas import RegisterRequest
    body = {"email": "root@example.com", "password": "a long enough passphrase", "name": "R"}
    assert RegisterRequest().load(dict(body, role="instructor"))["role"] == "instructor"
    with pytest.raises(marshmallow.ValidationError) as caught:
        RegisterRequest().load(dict(body, role="admin"))
    assert "role" in caught.value.messages


def test_create_admin_reads_one_line_of_stdin(monkeypatch):
    from operations import cli
    args = cli.build_parser().parse_args(
        ["create-admin", "--email", "root@example.com", "--name", "Root", "--password-stdin"])
    monkeypatch.setattr("sys.stdin", io.StringIO("my admin passphrase\nignored\n"))
    assert cli.read_new_password(args) == "my admin passphrase"
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(SystemExit, match="no password"):
        cli.read_new_password(args)


def test_create_admin_prompts_twice_and_refuses_a_mismatch(monkeypatch):
    from operations import cli
    args = cli.build_parser().parse_args(
        ["create-admin", "--email", "root@example.com", "--name", "Root"])
    answers = iter(["first passphrase", "second passphrase"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    with pytest.raises(SystemExit, match="differ"):
        cli.read_new_password(args)
    answers = iter(["same passphrase", "same passphrase"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    assert cli.read_new_password(args) == "same passphrase"


def test_replay_command_line():
    from operations import cli
    args = cli.build_parser().parse_args(
        ["replay", "--since", "2026-11-26T00:00:00Z", "--type", "a.b", "--type", "c.d",
         "--to-queue", "q", "--dry-run"])
    assert (args.types, args.to_queue, args.dry_run) == (["a.b", "c.d"], "q", True)


def test_a_long_source_is_kept_whole(session):
    record_all(session, [event("user.registered", {"user_id": 1}, source="s" * 1000)])
    assert commands.list_events(session)["items"][0]["source"] == "s" * 1000


def test_event_totals_count_up_to_the_limit_and_pages_stop_at_the_depth_cap(session, monkeypatch):
    record_all(session, [event("course.enrolled", {"user_id": 1, "course_id": n},
                               at=T0 + timedelta(seconds=n), event_id=f"e{n}")
                         for n in range(12)])
    assert commands.list_events(session)["total"] == 12
    monkeypatch.setattr("services.kit.schemas.MAX_COUNT", 5)
    page = commands.list_events(session, per_page=4, page=3)
    assert page["total"] == 5  # "at least 5"
    assert [item["data"]["course_id"] for item in page["items"]] == [3, 2, 1, 0]  # still all
    monkeypatch.setattr("services.kit.schemas.MAX_PAGE_DEPTH", 8)
    assert len(commands.list_events(session, per_page=4, page=2)["items"]) == 4
    with pytest.raises(ValidationError) as refused:
        commands.list_events(session, per_page=4, page=3)  # starts at item 9
    assert "page" in refused.value.fields
