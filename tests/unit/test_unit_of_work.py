"""The kit's unit of work (services/kit/db.py): commit or roll back, and declared conflicts."""
import pytest
from sqlalchemy import Index, Integer, String, UniqueConstraint, select
import sys

from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, TimeoutError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.kit.db import (
    end_transaction, raises_conflict, unreachable_database, violated_unique,
)
from services.kit.errors import Conflict, ServiceUnavailable
from tests.support.db import in_memory_session


class Base(DeclarativeBase):
    pass


class Seat(Base):
    __tablename__ = "seats"
    __table_args__ = (
        UniqueConstraint("row", "number", name="uq_seats_row_number",
                         info=raises_conflict("that seat is taken")),
        Index("ix_seats_holder", "holder", unique=True,
              info=raises_conflict("one seat each", {"holder": ["one seat each"]})),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    row: Mapped[int] = mapped_column(Integer)
    number: Mapped[int] = mapped_column(Integer)
    holder: Mapped[str] = mapped_column(String(20))
    ticket: Mapped[str] = mapped_column(String(20), unique=True)  # no conflict declared


@pytest.fixture
def session():
    with in_memory_session(Base.metadata) as session:
        session.add(Seat(id=1, row=1, number=1, holder="ada", ticket="t1"))
        session.commit()
        yield session


def test_a_declared_unique_constraint_raises_its_conflict_at_flush(session):
    session.add(Seat(row=1, number=1, holder="grace", ticket="t2"))
    with pytest.raises(Conflict, match="that seat is taken") as caught:
        session.flush()
    assert caught.value.fields == {}


def test_a_declared_unique_index_raises_its_conflict_with_its_fields_at_commit(session):
    session.add(Seat(row=2, number=1, holder="ada", ticket="t2"))
    exc_info = end_transaction(session, None)
    assert exc_info[0] is Conflict
    assert exc_info[1].message == "one seat each"
    assert exc_info[1].fields == {"holder": ["one seat each"]}
    assert session.execute(select(Seat.holder)).scalars().all() == ["ada"]  # rolled back


def test_other_integrity_errors_stay_integrity_errors(session):
    session.add(Seat(row=3, number=3, holder="grace", ticket="t1"))
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()
    session.add(Seat(id=1, row=4, number=4, holder="linus", ticket="t4"))  # the primary key
    with pytest.raises(IntegrityError):
        session.flush()


def test_end_transaction_commits_a_success_and_rolls_back_a_failure(session):
    session.add(Seat(row=5, number=5, holder="grace", ticket="t5"))
    assert end_transaction(session, None) is None
    session.add(Seat(row=6, number=6, holder="linus", ticket="t6"))
    failure = (ValueError, ValueError("the method failed"), None)
    assert end_transaction(session, failure) is failure
    assert sorted(session.execute(select(Seat.holder)).scalars()) == ["ada", "grace"]


def test_what_postgresql_and_sqlite_report(session):
    class Pg8000Error(Exception):  # pg8000 passes the server's error fields as its one arg
        pass

    assert violated_unique(Pg8000Error({"C": "23505", "n": "uq_seats_row_number"})) == (
        "uq_seats_row_number")
    assert violated_unique(Pg8000Error({"C": "23503", "n": "fk_seats_hall"})) is None
    assert violated_unique(Exception("UNIQUE constraint failed: seats.row, seats.number")) == (
        "seats", frozenset({"row", "number"}))
    assert violated_unique(Exception("NOT NULL constraint failed: seats.row")) is None


def _exc_info(exc):
    try:
        raise exc
    except Exception:
        return sys.exc_info()


@pytest.mark.parametrize("exc, unavailable", [
    (InterfaceError("SELECT 1", {}, Exception("network error"), connection_invalidated=True), True),
    (InterfaceError("SELECT 1", {}, Exception("Can't create a connection to host db")), True),
    (TimeoutError("QueuePool limit of size 13 overflow 10 reached"), True),
    (OperationalError("UPDATE t", {}, Exception("database is locked")), True),
    (OperationalError("SELECT x", {}, Exception("no such table: courses")), False),
    (IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed: t.a")), False),
    (ValueError("a bug"), False),
])
def test_a_database_that_cannot_be_reached_is_the_callers_service_unavailable(exc, unavailable):
    """What the gateway then answers: 503 with Retry-After, not a 500 with the driver's error."""
    answered = unreachable_database(_exc_info(exc), "course")[1]
    if unavailable:
        assert isinstance(answered, ServiceUnavailable)
        assert answered.message.startswith("course: database unavailable")
    else:
        assert answered is exc
    assert unreachable_database(None, "course") is None
