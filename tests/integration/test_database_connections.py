"""A service's PostgreSQL connections (services/kit/db.py), with the real server and broker.

Read-only RPCs (``@rpc(read_only=True)``): their statements run outside a transaction, each
committed by itself as under READ COMMITTED inside one; a write there is refused and leaves
nothing; the connection is back in a transaction for the next method.

Connections dying under a service: the course service running for real on its own migrated
database, its connections terminated by the server (what a restart or failover does to them),
called over RPC as the gateway calls it:

- a connection idle longer than PING_AFTER_IDLE_SECONDS is pinged before use: a dead one is
  replaced and no request fails;
- one checked in more recently is not pinged (no round trip for it): if it died since, that one
  request fails as ServiceUnavailable (the gateway's 503), and the next gets a new connection.
"""
import eventlet
import pytest
from nameko.exceptions import RemoteError
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import Engine, Integer, create_engine, event, func, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.course.service import CourseService
from services.kit import Database, db
from services.kit.db import normalize_url
from services.kit.errors import ServiceUnavailable
from services.kit.rpc import rpc
from tests.conftest import _admin_connection
from tests.support.broker import wait_until

pytestmark = pytest.mark.integration


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "rows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)


# inside a transaction, a second statement's time is later than the transaction's start
STATEMENT_IS_TRANSACTION = text("SELECT statement_timestamp() = transaction_timestamp()")


class Reader:
    name = "reader"
    db = Database(Base)

    def _statements_are_transactions(self):
        session = self.db.session
        session.execute(select(func.count()).select_from(Row))
        eventlet.sleep(0.01)
        return session.execute(STATEMENT_IS_TRANSACTION).scalar()

    @rpc(read_only=True)
    def read(self):
        return self._statements_are_transactions()

    @rpc
    def read_in_a_transaction(self):
        return self._statements_are_transactions()

    @rpc(read_only=True)
    def write_anyway(self):
        self.db.session.add(Row(id=1))


def test_a_read_only_method_runs_without_a_transaction_and_cannot_write(
        runner_factory, rabbit_config, make_database_url):
    url = make_database_url("postgresql")
    engine = create_engine(normalize_url(url))
    Base.metadata.create_all(engine)
    config = dict(rabbit_config, DB_URIS={"reader:Base": url}, max_workers=1)
    runner_factory(config, Reader).start()
    with ClusterRpcProxy(config, timeout=30) as proxy:
        assert proxy.reader.read() is True
        assert proxy.reader.read_in_a_transaction() is False  # the connection left autocommit
        assert proxy.reader.read() is True
        with pytest.raises(RemoteError, match="WriteInReadOnly"):
            proxy.reader.write_anyway()
        assert proxy.reader.read_in_a_transaction() is False
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Row)).scalar() == 0
    engine.dispose()


@pytest.fixture
def course(runner_factory, services_config):
    # no background loop touches the pool meanwhile: only the test's RPCs do
    config = services_config("course", OUTBOX_POLL_INTERVAL=3600, RETENTION_INTERVAL=3600)
    runner_factory(config, CourseService).start()
    url = config["DB_URIS"]["course:Base"]
    with ClusterRpcProxy(config, timeout=30) as proxy:
        yield proxy.course, url.rsplit("/", 1)[1], url


def terminate_connections(database):
    """What a database restart does to a client's connections: the server closes them."""
    admin = _admin_connection()
    try:
        admin.run("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE datname = :db AND pid <> pg_backend_pid()", db=database)
        wait_until(lambda: not admin.run("SELECT 1 FROM pg_stat_activity WHERE datname = :db "
                                         "AND pid <> pg_backend_pid()", db=database),
                   timeout=10, message="the server closed the connections")
    finally:
        admin.close()


@pytest.mark.parametrize("database_backend", ["postgresql"])
def test_a_connection_that_died_while_idle_costs_no_request(course, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.2)
    rpc, database, _ = course
    assert rpc.list_courses()["total"] == 0
    terminate_connections(database)
    eventlet.sleep(0.3)  # idle past the ping threshold
    assert rpc.list_courses()["total"] == 0
    assert rpc.list_courses()["total"] == 0


@pytest.mark.parametrize("database_backend", ["postgresql"])
def test_a_connection_that_died_in_use_costs_one_request_a_503(course, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600)
    rpc, database, _ = course
    assert rpc.list_courses()["total"] == 0
    terminate_connections(database)
    with pytest.raises(ServiceUnavailable, match="course: database unavailable"):
        rpc.list_courses()
    # the failure renewed the pool: the next request gets a new connection
    assert rpc.list_courses()["total"] == 0


@pytest.mark.parametrize("database_backend", ["postgresql"])
def test_only_the_relays_marking_commits_without_waiting_for_the_disk(course):
    """An enrollment (the change and its outbox row) commits as the server is set
    (synchronous_commit on); the relay's marking of its confirmed event as sent, which a server
    crash could only undo into a republish, does not wait for the WAL flush."""
    rpc, _, url = course
    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO courses (id, title, description, instructor_id, created_at) "
                          "VALUES (1, 'Durability 101', 'd', 999, now())"))
    engine.dispose()
    open_transactions, transactions = {}, []  # statements, per connection

    def record(conn, _cursor, statement, _parameters, _context, _executemany):
        open_transactions.setdefault(id(conn.connection.dbapi_connection), []).append(statement)

    def end(conn):
        transactions.append(open_transactions.pop(id(conn.connection.dbapi_connection), []))

    listeners = [(Engine, "before_cursor_execute", record), (Engine, "commit", end),
                 (Engine, "rollback", end)]
    for listener in listeners:
        event.listen(*listener)
    try:
        rpc.enroll(7, 1)
        wait_until(lambda: any(s.startswith("UPDATE outbox_events SET sent_at")
                               for statements in transactions for s in statements),
                   timeout=10, message="the course.enrolled event marked sent")
    finally:
        for listener in listeners:
            event.remove(*listener)

    def the_one(prefix):
        [statements] = [statements for statements in transactions
                        if any(s.startswith(prefix) for s in statements)]
        return statements

    enrollment = the_one("INSERT INTO outbox_events")
    marking = the_one("UPDATE outbox_events SET sent_at")
    assert not any("synchronous_commit" in s for s in enrollment), enrollment
    assert marking[0] == "SET LOCAL synchronous_commit TO OFF", marking
