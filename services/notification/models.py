"""The notification service's tables.

- ``contacts``: who a user is (email, name), learnt from ``user.registered`` (or, for a user
  registered before this service listened, from ``auth.get_user``).
- ``courses``: a course's title and instructor, learnt from ``course.created``.
- ``notifications``: every notice, stored ``pending`` by the event handler in the same transaction
  as its inbox record, then delivered by the mail sender (``sender.py``), which marks it ``sent``,
  or ``failed`` after ``MAIL_MAX_ATTEMPTS`` failed tries.
"""
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.kit.db import BigId, InboxHorizonMixin, InboxRecordMixin, utcnow

PENDING, SENT, FAILED = "pending", "sent", "failed"
STATUSES = (PENDING, SENT, FAILED)

WELCOME = "welcome"
COURSE_LIVE = "course_live"
ENROLLMENT_CONFIRMED = "enrollment_confirmed"
NEW_REVIEW = "new_review"
KINDS = (WELCOME, COURSE_LIVE, ENROLLMENT_CONFIRMED, NEW_REVIEW)


class Base(DeclarativeBase):
    pass


class InboxRecord(InboxRecordMixin, Base):
    pass


class InboxHorizon(InboxHorizonMixin, Base):
    pass


class Contact(Base):
    """How to address a user."""
    __tablename__ = "contacts"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 onupdate=utcnow)


class Course(Base):
    """What a notice needs to know about a course."""
    __tablename__ = "courses"

    course_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    title: Mapped[str] = mapped_column(String(300))
    instructor_id: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 onupdate=utcnow)


class Notification(Base):
    """One notice to one user, from one event; delivered at most once per (event_id, kind)."""
    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("event_id", "kind", name="uq_notifications_event_id_kind"),
        Index("ix_notifications_user_id_id", "user_id", "id"),
        Index("ix_notifications_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    email: Mapped[str] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    event_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    # None: due now. While a sender delivers it, a lease: no other sender picks it up before.
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
