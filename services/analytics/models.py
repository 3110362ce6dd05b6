"""The analytics service's tables: the append-only event log, its aggregates and its inbox.

- ``event_log``: one row per event_id (unique), the envelope as it arrived plus the routing key
  it was published with and when analytics received it. Never updated, never deleted.
- The aggregates, kept in the same transaction as the log row (so each event counts once):
  ``registrations_per_day`` (user.registered), ``enrollments_per_course`` (course.enrolled),
  ``rating_counts`` (review.created, ratings 1-5), ``event_type_counts`` and
  ``events_per_minute`` (every event, by the minute of its own timestamp, UTC).
"""
from datetime import date, datetime

from sqlalchemy import (
    JSON, BigInteger, Date, DateTime, Index, Integer, SmallInteger, String, Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.kit.db import BigId, InboxHorizonMixin, InboxRecordMixin, utcnow


class Base(DeclarativeBase):
    pass


class InboxRecord(InboxRecordMixin, Base):
    pass


class InboxHorizon(InboxHorizonMixin, Base):
    pass


class EventLog(Base):
    __tablename__ = "event_log"
    __table_args__ = (
        Index("ix_event_log_timestamp_id", "timestamp", "id"),
        Index("ix_event_log_event_type_timestamp", "event_type", "timestamp"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_type: Mapped[str] = mapped_column(String(255))
    # the routing key it was published with (a retried delivery's original one, not its queue's)
    routing_key: Mapped[str] = mapped_column(String(255))
    source: Mapped[str | None] = mapped_column(Text)  # the kit does not bound its length
    version: Mapped[int] = mapped_column(Integer)
    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # the event's, in UTC
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    data: Mapped[dict] = mapped_column(JSON)
    # data.user_id / data.course_id when they are integers, for filtering
    user_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    course_id: Mapped[int | None] = mapped_column(BigInteger, index=True)


class RegistrationsPerDay(Base):
    __tablename__ = "registrations_per_day"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class EnrollmentsPerCourse(Base):
    __tablename__ = "enrollments_per_course"
    # the summary's top courses: read backwards from the end of this index, never by sorting
    __table_args__ = (Index("ix_enrollments_per_course_top", "count", "course_id"),)

    course_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    course_title: Mapped[str | None] = mapped_column(String(300))
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class RatingCount(Base):
    __tablename__ = "rating_counts"

    rating: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class EventTypeCount(Base):
    __tablename__ = "event_type_counts"

    event_type: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class EventsPerMinute(Base):
    __tablename__ = "events_per_minute"

    minute: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
