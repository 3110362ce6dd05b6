"""The course service's tables: courses (with their rating and enrollment aggregates),
enrollments, its outbox and its inbox."""
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from services.kit import InboxHorizonMixin, InboxRecordMixin, OutboxEventMixin
from services.kit.db import BigId, raises_conflict, utcnow

ALREADY_ENROLLED = "already enrolled in this course"


class Base(DeclarativeBase):
    pass


class OutboxEvent(OutboxEventMixin, Base):
    pass


class InboxRecord(InboxRecordMixin, Base):
    pass


class InboxHorizon(InboxHorizonMixin, Base):
    pass


class Course(Base):
    __tablename__ = "courses"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    instructor_id: Mapped[int] = mapped_column(BigInteger, index=True)  # a user of auth
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Aggregates, only ever changed with atomic UPDATEs (x = x + 1): no lost update.
    rating_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rating_sum: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    enrollment_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    @property
    def rating_average(self):
        if not self.rating_count:
            return None
        return round(self.rating_sum / self.rating_count, 2)


class Enrollment(Base):
    __tablename__ = "enrollments"
    __table_args__ = (UniqueConstraint("user_id", "course_id", name="uq_enrollments_user_course",
                                       info=raises_conflict(ALREADY_ENROLLED)),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)  # a user of auth
    course_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("courses.id"), index=True)
    enrolled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    course: Mapped[Course] = relationship(lazy="joined")

    @property
    def course_title(self):
        return self.course.title
