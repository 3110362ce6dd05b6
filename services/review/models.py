"""The review service's tables: reviews (one per user and course) and its outbox."""
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, SmallInteger, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.kit import OutboxEventMixin
from services.kit.db import BigId, raises_conflict, utcnow

ALREADY_REVIEWED = "you have already reviewed this course"


class Base(DeclarativeBase):
    pass


class OutboxEvent(OutboxEventMixin, Base):
    pass


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("user_id", "course_id", name="uq_reviews_user_course",
                                       info=raises_conflict(ALREADY_REVIEWED)),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger)  # a user of auth
    course_id: Mapped[int] = mapped_column(BigInteger, index=True)  # a course of course
    rating: Mapped[int] = mapped_column(SmallInteger)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
