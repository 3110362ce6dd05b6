"""analytics' rules, as plain functions of a SQLAlchemy session (the service wires them)."""
import logging
from datetime import timedelta, timezone

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite

from contracts import COURSE_ENROLLED, REVIEW_CREATED, USER_REGISTERED
from services.analytics.models import (
    EnrollmentsPerCourse, EventLog, EventsPerMinute, EventTypeCount, RatingCount,
    RegistrationsPerDay,
)
from services.analytics.schemas import EventLogSchema, ListEventsArgs
from services.kit.db import utcnow
from services.kit.schemas import dumper, page_of

log = logging.getLogger(__name__)

RATINGS = (1, 2, 3, 4, 5)
SUMMARY_MINUTES = 60
# The public summary stays the same size however many courses and days there are.
SUMMARY_TOP_COURSES = 10
SUMMARY_DAYS = 30
MAX_BIGINT = 2**63 - 1


def as_utc(moment):
    """An aware UTC datetime; a naive one (SQLite hands those back) is taken as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def floor_minute(moment):
    return as_utc(moment).replace(second=0, microsecond=0)


def integer_id(value):
    """``value`` if it is an integer id that fits a BIGINT (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if -MAX_BIGINT - 1 <= value <= MAX_BIGINT else None


def valid_rating(value):
    return None if isinstance(value, bool) or value not in RATINGS else value


def _insert(session, model):
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model)
    if dialect == "sqlite":
        return sqlite.insert(model)
    raise RuntimeError(f"analytics aggregates need PostgreSQL or SQLite, not {dialect}")


def add_counts(session, model, key_names, rows):
    """count += row["count"] for each row (created with it), in one INSERT .. ON CONFLICT.

    ``rows``: one per key, each the key's columns, ``count`` and the other columns to set (an
    existing value is kept where the new one is None). Rows are written in key order, so that
    two transactions lock the same rows in the same order (no deadlock between instances).
    """
    if not rows:
        return
    rows = sorted(rows, key=lambda row: tuple(row[name] for name in key_names))
    statement = _insert(session, model).values(rows)
    table = model.__table__
    updates = {"count": table.c.count + statement.excluded["count"]}
    for name in rows[0]:
        if name not in key_names and name != "count":
            updates[name] = func.coalesce(statement.excluded[name], table.c[name])
    session.execute(statement.on_conflict_do_update(index_elements=key_names, set_=updates))


def record(session, event, routing_key, received_at=None):
    """Append ``event`` to the log and count it in the aggregates, in the caller's transaction.

    Returns the new log row, or None if the log already holds this event_id (it then counts
    nothing). The kit's inbox already skips a redelivered event; this is the second line.
    """
    return record_all(session, [event], {event.event_id: routing_key}, received_at)[0]


def record_all(session, events, routing_keys, received_at=None):
    """``record`` for each of ``events`` (a batch, oldest first), in the caller's transaction.

    One lookup for the batch, one INSERT of its log rows, and one upsert per aggregate table
    with the batch's counts merged per row: per event, the aggregates' hot rows (this minute,
    this type) would be locked and written once per event. ``routing_keys``: event_id -> the
    routing key it was published with (None: its type). Returns the new log rows, None for an
    event already in the log. Two events of the batch with one event_id break the log's
    unique key at the flush (the kit then handles them one at a time).
    """
    ids = [event.event_id for event in events]
    logged = set(session.execute(select(EventLog.event_id).where(EventLog.event_id.in_(ids)))
                 .scalars())
    received_at = received_at or utcnow()
    rows, counts = [], {}

    def count(model, key_names, key, **columns):
        by_key = counts.setdefault(model, (key_names, {}))[1]
        row = by_key.setdefault(key, dict(zip(key_names, key), count=0))
        row["count"] += 1
        for name, value in columns.items():  # the newest non-None value, as one by one
            if value is not None or name not in row:
                row[name] = value

    for event in events:
        if event.event_id in logged:
            log.info("event %s is already in the log; not counted again", event.event_id)
            rows.append(None)
            continue
        data = event.data
        timestamp = as_utc(event.timestamp)
        row = EventLog(event_id=event.event_id, event_type=event.event_type,
                       routing_key=routing_keys.get(event.event_id) or event.event_type,
                       source=event.source, version=event.version, timestamp=timestamp,
                       received_at=received_at, data=data,
                       user_id=integer_id(data.get("user_id")),
                       course_id=integer_id(data.get("course_id")))
        rows.append(row)
        count(EventTypeCount, ("event_type",), (event.event_type,))
        count(EventsPerMinute, ("minute", "event_type"), (floor_minute(timestamp),
                                                          event.event_type))
        if event.event_type == USER_REGISTERED:
            count(RegistrationsPerDay, ("day",), (timestamp.date(),))
        elif event.event_type == COURSE_ENROLLED:
            course_id = integer_id(data.get("course_id"))
            if course_id is None:
                log.warning("course.enrolled %s has no integer course_id; logged, not counted "
                            "per course", event.event_id)
            else:
                title = data.get("course_title")
                count(EnrollmentsPerCourse, ("course_id",), (course_id,),
                      course_title=title[:300] if isinstance(title, str) else None)
        elif event.event_type == REVIEW_CREATED:
            rating = valid_rating(data.get("rating"))
            if rating is None:
                log.warning("review.created %s has rating %r, not 1-5; logged, not counted in "
                            "the distribution", event.event_id, data.get("rating"))
            else:
                count(RatingCount, ("rating",), (rating,))
    new_rows = [row for row in rows if row is not None]
    if not new_rows:
        return rows
    session.add_all(new_rows)
    session.flush()  # the unique event_id decides a race before any aggregate moves
    for model, (key_names, by_key) in counts.items():
        add_counts(session, model, list(key_names), list(by_key.values()))
    return rows


def list_events(session, event_type=None, since=None, until=None, user_id=None, course_id=None,
                page=1, per_page=20, after=None):
    """A page of the log, newest (event timestamp, then id) first; since inclusive, until
    exclusive; ``after`` a page's ``next`` cursor (the same filters given again)."""
    args = ListEventsArgs.shared().load_or_raise(
        {"event_type": event_type, "since": since, "until": until, "user_id": user_id,
         "course_id": course_id, "page": page, "per_page": per_page, "after": after})
    query = select(EventLog)
    if args["event_type"] is not None:
        query = query.where(EventLog.event_type == args["event_type"])
    if args["since"] is not None:
        query = query.where(EventLog.timestamp >= args["since"])
    if args["until"] is not None:
        query = query.where(EventLog.timestamp < args["until"])
    if args["user_id"] is not None:
        query = query.where(EventLog.user_id == args["user_id"])
    if args["course_id"] is not None:
        query = query.where(EventLog.course_id == args["course_id"])
    return page_of(session, query, (EventLog.timestamp, EventLog.id), args["page"],
                   args["per_page"], dumper(EventLogSchema),
                   after=args["after"])


def summary(session, now=None):
    """The aggregates, bounded: registrations of the last SUMMARY_DAYS days, the
    SUMMARY_TOP_COURSES courses with most enrollments (the rest counted together), and
    events_per_minute of the last SUMMARY_MINUTES minutes (by event time). Each list is an
    index range read, whatever the size of the tables."""
    now = now or utcnow()
    by_type = {event_type: count for event_type, count in session.execute(
        select(EventTypeCount.event_type, EventTypeCount.count)
        .order_by(EventTypeCount.event_type))}
    first_day = now.date() - timedelta(days=SUMMARY_DAYS - 1)
    registrations = [{"day": day.isoformat(), "count": count} for day, count in session.execute(
        select(RegistrationsPerDay.day, RegistrationsPerDay.count)
        .where(RegistrationsPerDay.day >= first_day)
        .order_by(RegistrationsPerDay.day))]
    enrollments = [{"course_id": course_id, "course_title": title, "count": count}
                   for course_id, title, count in session.execute(
                       select(EnrollmentsPerCourse.course_id, EnrollmentsPerCourse.course_title,
                              EnrollmentsPerCourse.count)
                       .order_by(EnrollmentsPerCourse.count.desc(),
                                 EnrollmentsPerCourse.course_id.desc())
                       .limit(SUMMARY_TOP_COURSES))]
    # every course.enrolled is counted by type; what the top courses do not hold is the rest
    other_enrollments = by_type.get(COURSE_ENROLLED, 0) - sum(row["count"] for row in enrollments)
    ratings = {str(rating): 0 for rating in RATINGS}
    for rating, count in session.execute(select(RatingCount.rating, RatingCount.count)):
        ratings[str(rating)] = count
    last_minute = floor_minute(now)
    first_minute = last_minute - timedelta(minutes=SUMMARY_MINUTES - 1)
    per_minute = [{"minute": as_utc(minute).isoformat(), "event_type": event_type,
                   "count": count}
                  for minute, event_type, count in session.execute(
                      select(EventsPerMinute.minute, EventsPerMinute.event_type,
                             EventsPerMinute.count)
                      .where(EventsPerMinute.minute >= first_minute,
                             EventsPerMinute.minute <= last_minute)
                      .order_by(EventsPerMinute.minute, EventsPerMinute.event_type))]
    session.rollback()  # reads only
    return {"events_total": sum(by_type.values()), "events_by_type": by_type,
            "registrations_per_day": registrations, "enrollments_per_course": enrollments,
            "enrollments_in_other_courses": other_enrollments,
            "rating_distribution": ratings, "events_per_minute": per_minute}
