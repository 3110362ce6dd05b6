"""The kit's pg8000 connections (services/kit/pg.py): one round trip per statement, and the same
answers and errors as pg8000's own three, on the real server."""
import io

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, insert, text
from sqlalchemy.exc import IntegrityError, ProgrammingError

from services.kit import pg
from services.kit.db import commit_without_flush_wait, create_engine_for

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(make_database_url):
    engine = create_engine_for(make_database_url("postgresql"), pool_size=1)
    yield engine
    engine.dispose()


def count_flushes(dbapi_connection):
    """How many times the connection sends what it buffered: once per round trip."""
    sock = dbapi_connection._sock
    counter = {"flushes": 0}
    flush = sock.flush

    def counting_flush():
        counter["flushes"] += 1
        return flush()
    sock.flush = counting_flush
    return counter


def test_statements_answer_as_before_in_one_round_trip(engine):
    with engine.connect() as conn:
        assert isinstance(conn.connection.dbapi_connection, pg.PipelinedConnection)
        conn.execute(text("CREATE TABLE t (id integer PRIMARY KEY, name text, seen timestamptz)"))
        conn.commit()
        counter = count_flushes(conn.connection.dbapi_connection)
        conn.execute(text("INSERT INTO t VALUES (:id, :name, now())"), {"id": 1, "name": "ä"})
        row = conn.execute(text("SELECT id, name, seen IS NOT NULL FROM t WHERE id = :id"),
                           {"id": 1}).one()
        assert tuple(row) == (1, "ä", True)
        # the insert with the BEGIN before it, then the select (pg8000's own: 1 + 3 + 3)
        assert counter["flushes"] == 2
        conn.commit()
        assert conn.execute(text("SELECT count(*) FROM t WHERE id > :id"), {"id": 5}).scalar() == 0


def test_many_rows_insert_in_one_round_trip(engine):
    """An executemany INSERT without RETURNING (a batch's inbox records): pg8000 would run it
    once per row, a round trip each; the kit's engines send multi-row INSERTs."""
    table = Table("many", MetaData(), Column("id", Integer, primary_key=True,
                                             autoincrement=False), Column("name", Text))
    with engine.connect() as conn:
        table.create(conn)
        conn.commit()
        counter = count_flushes(conn.connection.dbapi_connection)
        conn.execute(insert(table), [{"id": i, "name": f"n{i}"} for i in range(50)])
        assert counter["flushes"] == 1  # BEGIN and one INSERT of the 50 rows
        conn.commit()
        assert conn.execute(text("SELECT count(*), sum(id) FROM many")).one() == (50, 1225)


def test_a_transaction_begins_with_its_first_statement(engine):
    """pg8000's BEGIN goes with the statement after it (both protocols): one round trip, and
    the statement is inside the transaction (a rollback undoes it)."""
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE t (id integer PRIMARY KEY)"))
        conn.commit()
        counter = count_flushes(conn.connection.dbapi_connection)
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")  # no parameters: a simple Query
        assert conn.exec_driver_sql("SELECT now() = statement_timestamp()").scalar() is False
        conn.rollback()
        conn.execute(text("INSERT INTO t VALUES (:id)"), {"id": 2})  # parameters: Parse/Bind
        conn.rollback()
        assert counter["flushes"] == 5  # 2 statements + ROLLBACK, 1 statement + ROLLBACK
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 0
        conn.rollback()
        # a statement that fails leaves its transaction failed, as it would after a BEGIN alone
        with pytest.raises(ProgrammingError):
            conn.execute(text("SELECT nope FROM t WHERE id = :id"), {"id": 1})
        assert conn.connection.dbapi_connection._in_transaction
        conn.rollback()


def test_commit_without_flush_wait_holds_for_its_transaction_alone(engine):
    """The SET LOCAL goes with the transaction's first statement (no round trip of its own, in
    both protocols), applies to that transaction, and is gone after it."""
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE t (id integer PRIMARY KEY)"))
        conn.commit()
        counter = count_flushes(conn.connection.dbapi_connection)
        commit_without_flush_wait(conn)
        conn.execute(text("INSERT INTO t VALUES (:id)"), {"id": 1})  # Parse/Bind
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
        conn.commit()
        assert counter["flushes"] == 3  # the insert, the SHOW, the COMMIT
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
        conn.commit()
        commit_without_flush_wait(conn)
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"  # simple Query
        conn.rollback()
        commit_without_flush_wait(conn)
        conn.commit()  # a transaction that ran nothing: nothing sent
        assert counter["flushes"] == 7  # 3 before, SHOW + COMMIT, SHOW + ROLLBACK
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 1
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
        conn.rollback()
        # a SET LOCAL that fails fails the statement it went with, which did not run
        conn.exec_driver_sql("SET LOCAL no_such_setting TO 1")
        with pytest.raises(ProgrammingError):
            conn.execute(text("INSERT INTO t VALUES (:id)"), {"id": 2})
        conn.rollback()
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 1


def test_autocommit_sends_no_begin(engine):
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE t (id integer PRIMARY KEY)"))
        conn.commit()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("INSERT INTO t VALUES (:id)"), {"id": 1})
        assert not conn.connection.dbapi_connection._in_transaction
        conn.rollback()  # nothing to undo: the insert committed by itself
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 1


def test_errors_leave_the_connection_usable(engine):
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE t (id integer PRIMARY KEY)"))
        conn.execute(text("INSERT INTO t VALUES (:id)"), {"id": 1})
        conn.commit()
        with pytest.raises(IntegrityError):
            conn.execute(text("INSERT INTO t VALUES (:id)"), {"id": 1})
        conn.rollback()
        with pytest.raises(ProgrammingError):
            conn.execute(text("SELECT nope FROM t WHERE id = :id"), {"id": 1})
        conn.rollback()
        assert conn.execute(text("SELECT id FROM t WHERE id = :id"), {"id": 1}).scalar() == 1
        # a rolled back insert is gone
        conn.execute(text("INSERT INTO t VALUES (:id)"), {"id": 2})
        conn.rollback()
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 1


def test_copy_from_a_stream_still_works(engine):
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("CREATE TABLE t (id integer, name text)")
        cursor.execute("COPY t FROM STDIN WITH (FORMAT csv)", stream=io.BytesIO(b"1,a\n2,b\n"))
        cursor.execute("SELECT name FROM t WHERE id = %s", (2,))
        assert [list(row) for row in cursor.fetchall()] == [["b"]]
        raw.commit()
        cursor.execute("SELECT count(*) FROM t")
        assert cursor.fetchone()[0] == 2
    finally:
        raw.close()


def test_cached_placeholder_rewrite_gives_pg8000s_answers(engine):
    from pg8000.dbapi import convert_paramstyle as stock
    statement = "SELECT '%%s', %s::INTEGER, '%%' || %s -- %s\n, %s"
    args = (1, "x", 2)
    assert pg.convert_paramstyle("format", statement, args) == stock("format", statement, args)
    assert pg.convert_paramstyle("named", "SELECT :a, :b, :a", {"a": 1, "b": 2}) == \
        stock("named", "SELECT :a, :b, :a", {"a": 1, "b": 2})
    with engine.connect() as conn:  # through SQLAlchemy, twice (the second from the cache)
        for _ in range(2):
            assert conn.execute(text("SELECT CAST(:a AS integer) + 1, '100%'"),
                                {"a": 41}).one() == (42, "100%")


def test_timestamps_and_dates_read_as_pg8000_reads_them(engine):
    # the server's own text for each value, read by pg8000's converters and by the kit's
    from pg8000 import converters
    values = {
        "timestamptz": ["2026-12-01 12:00:00.123456+00", "2026-12-01 12:00:00+05:30",
                        "1999-01-01 00:00:00.5+00", "infinity", "-infinity",
                        "0044-03-15 12:00:00+00 BC"],
        "timestamp": ["2026-12-01 12:00:00.123456", "2026-12-01 12:00:00", "infinity"],
        "date": ["2026-12-01", "0001-01-01", "infinity", "0044-03-15 BC"],
    }
    pg8000_readers = {"timestamptz": converters.timestamptz_in,
                      "timestamp": converters.timestamp_in, "date": converters.date_in}
    with engine.connect() as conn:
        conn.execute(text("SET TIME ZONE 'UTC'"))
        for type_name, literals in values.items():
            for literal in literals:
                as_text, value = conn.execute(
                    text(f"SELECT CAST(:v AS {type_name})::text, CAST(:v AS {type_name})"),
                    {"v": literal}).one()
                assert value == pg8000_readers[type_name](as_text), (type_name, literal)
                assert type(value) is type(pg8000_readers[type_name](as_text))
