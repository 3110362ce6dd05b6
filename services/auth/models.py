"""The auth service's tables: users (email normalized, unique), login throttle counters and its
outbox."""
from datetime import datetime

from sqlalchemy import DateTime, Double, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.kit import OutboxEventMixin
from services.kit.db import BigId, raises_conflict, utcnow

EMAIL_TAKEN = "this email address is already registered"


class Base(DeclarativeBase):
    pass


class OutboxEvent(OutboxEventMixin, Base):
    pass


class User(Base):
    __tablename__ = "users"
    # Emails are always stored normalized (stripped, lowercased): the unique index makes them
    # unique case-insensitively, and a concurrent register of the same address fails on it.
    __table_args__ = (Index("ix_users_email", "email", unique=True,
                            info=raises_conflict(EMAIL_TAKEN, {"email": [EMAIL_TAKEN]})),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(254))
    password_hash: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LoginThrottleEntry(Base):
    """A counter of recent failed logins (services/auth/throttle.py): per client address, per
    account or per both, keyed by a hash of them. Epoch seconds, so every replica compares the
    same numbers."""
    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[float] = mapped_column(Double, index=True)
    next_attempt_at: Mapped[float] = mapped_column(Double)
