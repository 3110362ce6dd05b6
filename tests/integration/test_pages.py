"""Lists page by number and by cursor on SQLite and PostgreSQL, through the services' own
queries on databases migrated to head: following ``next`` visits every item once, in order, at
any depth; a cursor's page is an index range read (PostgreSQL's plan), not a scan."""
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from services.analytics import commands as analytics
from services.analytics.models import EventLog
from services.course import commands as course
from services.course.models import Course
from services.kit import schemas
from services.kit.db import create_engine_for
from services.kit.errors import ValidationError

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


@pytest.fixture
def open_backend_session(make_service_database):
    """``open_backend_session(service, backend)``: a session on a new database of the service."""
    opened = []

    def open_(service_name, backend):
        session = Session(create_engine_for(make_service_database(service_name, backend)))
        opened.append(session)
        return session

    yield open_
    for session in opened:
        session.close()
        session.bind.dispose()


@pytest.fixture
def open_session(open_backend_session, database_backend):
    return lambda service_name: open_backend_session(service_name, database_backend)


def follow(list_page, per_page):
    """Every page from the first, by each page's ``next``."""
    pages = [list_page(page=1, per_page=per_page)]
    while pages[-1]["next"] is not None:
        pages.append(list_page(page=1, per_page=per_page, after=pages[-1]["next"]))
    return pages


def test_courses_by_cursor_past_the_numbered_pages_cap(open_session, monkeypatch):
    session = open_session("course")
    session.execute(insert(Course), [{"instructor_id": 7, "title": f"Course {n}",
                                      "description": ""} for n in range(23)])
    session.commit()
    monkeypatch.setattr(schemas, "MAX_PAGE_DEPTH", 10)  # numbered pages stop at item 10

    pages = follow(lambda **page: course.list_courses(session, **page), per_page=4)

    ids = [item["id"] for page in pages for item in page["items"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 23
    assert [len(page["items"]) for page in pages] == [4, 4, 4, 4, 4, 3]
    assert [page["page"] for page in pages] == [1, None, None, None, None, None]
    assert {page["total"] for page in pages} == {23}
    assert pages[-1]["next"] is None
    monkeypatch.setattr(schemas, "MAX_COUNT", 20)  # the total counts at most MAX_COUNT
    assert course.list_courses(session, page=1, per_page=4)["total"] == 20
    with pytest.raises(ValidationError) as capped:
        course.list_courses(session, page=4, per_page=4)  # starts at item 13
    assert "after" in capped.value.fields["page"][0]


def test_a_full_last_page_has_no_next(open_session):
    session = open_session("course")
    session.execute(insert(Course), [{"instructor_id": 7, "title": f"Course {n}",
                                      "description": ""} for n in range(4)])
    session.commit()
    first = course.list_courses(session, page=1, per_page=2)
    last = course.list_courses(session, page=1, per_page=2, after=first["next"])
    assert len(last["items"]) == 2 and last["next"] is None


def test_events_by_cursor_keep_their_order_across_equal_timestamps(open_session):
    session = open_session("analytics")
    # three events a second, so most pages end inside a run of equal timestamps
    rows = [{"event_id": f"e{n}", "event_type": "course.enrolled" if n % 2 else "user.registered",
             "routing_key": "course.enrolled", "version": 1, "timestamp": T0 + timedelta(
                 seconds=n // 3), "received_at": T0, "data": {}, "user_id": n % 5,
             "course_id": None} for n in range(40)]
    session.execute(insert(EventLog), rows)
    session.commit()
    expected = [row.event_id for row in session.execute(
        select(EventLog.event_id).order_by(EventLog.timestamp.desc(), EventLog.id.desc()))]

    pages = follow(lambda **page: analytics.list_events(session, **page), per_page=7)
    assert [item["event_id"] for page in pages for item in page["items"]] == expected

    # the filters are given again with the cursor, and still apply
    enrolled = follow(lambda **page: analytics.list_events(
        session, event_type="course.enrolled", until=(T0 + timedelta(seconds=10)).isoformat(),
        **page), per_page=4)
    seen = [item for page in enrolled for item in page["items"]]
    assert [item["event_id"] for item in seen] == [
        event_id for event_id in expected
        if int(event_id[1:]) % 2 and int(event_id[1:]) // 3 < 10]


@pytest.mark.parametrize("cursor", [
    "not base64 at all!", "e30", "WzFd" + "A", "WyJ4Il0", "WzEsMl0", "Wy0xXQ",
    "WzEwMDAwMDAwMDAwMDAwMDAwMDAwMDBd", "WzEuNV0", "W3RydWVd",
])
def test_a_cursor_that_is_not_one_is_refused_naming_after(open_session, cursor):
    # {}, ["x"], [1,2], [-1], [10**22], [1.5], [true]: none is a course list's cursor
    session = open_session("course")
    with pytest.raises(ValidationError) as refused:
        course.list_courses(session, page=1, per_page=2, after=cursor)
    assert list(refused.value.fields) == ["after"]


@pytest.mark.parametrize("values", [["2026-11-01T00:00:00", 1], [1, 1], ["9999-99-99", 1],
                                    ["0001-01-01T00:00:00+01:00", 1]])
def test_an_event_cursor_needs_a_moment_with_its_offset(open_session, values):
    import base64
    import json
    session = open_session("analytics")
    cursor = base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")
    with pytest.raises(ValidationError) as refused:
        analytics.list_events(session, after=cursor)
    assert list(refused.value.fields) == ["after"]


def test_page_and_cursor_together_are_refused(open_session):
    session = open_session("course")
    with pytest.raises(ValidationError) as refused:
        course.list_courses(session, page=2, per_page=2, after="WzFd")
    assert list(refused.value.fields) == ["after"]


def test_a_cursor_page_is_an_index_range_read_on_postgresql(open_backend_session):
    session = open_backend_session("analytics", "postgresql")
    session.execute(insert(EventLog), [
        {"event_id": f"e{n}", "event_type": "course.enrolled", "routing_key": "course.enrolled",
         "version": 1, "timestamp": T0 + timedelta(seconds=n), "received_at": T0, "data": {},
         "user_id": None, "course_id": None} for n in range(5000)])
    session.execute(text("ANALYZE event_log"))
    session.commit()
    key = (EventLog.timestamp, EventLog.id)
    deep = session.get(EventLog, 2500)
    query = schemas.page_query(select(EventLog), key, 1, 20, schemas.cursor_for(key, deep))
    compiled = query.compile(session.bind, compile_kwargs={"literal_binds": True})
    plan = "\n".join(row[0] for row in session.execute(text(f"EXPLAIN {compiled}")))
    assert "ix_event_log_timestamp_id" in plan and "Seq Scan" not in plan, plan
    assert "Index Cond" in plan, plan  # the cursor bounds the index range itself
    assert "Sort" not in plan, plan
