"""Each service's database: nameko-sqlalchemy's ``Database`` plus the outbox and inbox tables.

A service's ``models.py`` adds the kit's tables to its own declarative base (the inbox and its
horizon only if it handles events; without the horizon its inbox is never pruned)::

    class Base(DeclarativeBase):
        pass

    class OutboxEvent(OutboxEventMixin, Base):
        pass

    class InboxRecord(InboxRecordMixin, Base):
        pass

    class InboxHorizon(InboxHorizonMixin, Base):
        pass

and its service class declares ``db = Database(Base)``. Entrypoints use ``self.db.session``
and never commit: the kit does, one rule for every entrypoint (the unit of work)::

    @rpc method returns  --> commit --> reply         (services/kit/rpc.py)
    @rpc method raises   --> roll back --> reply with the error
    @rpc(read_only=True) --> on PostgreSQL no transaction at all; a write is refused
    @event_handler       --> commit with the inbox records --> ack   (inbox.py, handlers.py)

    a write that breaks a unique constraint declared with raises_conflict(message), in the
    method's flush or in the kit's commit --> Conflict(message), not an IntegrityError
"""
import functools
import logging
import os
import re
import sys
import time
import weakref
from datetime import datetime, timezone

import nameko_sqlalchemy
from sqlalchemy import (
    BigInteger, DateTime, Index, Integer, String, Text, create_engine, event, text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DBAPIError, IntegrityError, InterfaceError, InvalidatePoolError, OperationalError,
    SQLAlchemyError, TimeoutError as PoolTimeout,
)
from sqlalchemy.orm import Mapped, mapped_column

from services.kit import pg
from services.kit.errors import Conflict, ServiceUnavailable
from services.kit.settings import DB_POOL_SIZE, DB_URIS, MAX_WORKERS

log = logging.getLogger(__name__)

# SQLite wants INTEGER PRIMARY KEY for an auto-incrementing id; PostgreSQL gets a BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow():
    return datetime.now(timezone.utc)


class OutboxEventMixin:
    """An event saved in the same transaction as the change it announces, until it is published."""
    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_type: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)  # the envelope's JSON, exactly as it is published
    headers: Mapped[str] = mapped_column(Text, default="{}")  # nameko context (call id stack)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)


class InboxRecordMixin:
    """An event a consumer has processed; committed in the same transaction as the effect."""
    __tablename__ = "inbox_records"

    consumer: Mapped[str] = mapped_column(String(255), primary_key=True)  # the queue name
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(255))
    # indexed: the retention sweep deletes by age (services/kit/retention.py)
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                   index=True)


class InboxHorizonMixin:
    """Per consumer: inbox records processed before ``pruned_before`` may have been deleted.

    Written by the retention sweep before it deletes; read for a replayed event the inbox does
    not know (services/kit/retention.py says why).
    """
    __tablename__ = "inbox_horizons"

    consumer: Mapped[str] = mapped_column(String(255), primary_key=True)  # the queue name
    pruned_before: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def check_database(session, service_name):
    """What every service's ``health()`` answers: its database runs a query, or it is unavailable."""
    try:
        session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise ServiceUnavailable(f"{service_name}: database unavailable ({type(exc).__name__})")
    return {"service": service_name, "database": "ok"}


def normalize_url(uri):
    """Plain ``postgresql://`` URLs get the pg8000 driver: it is green under eventlet."""
    url = make_url(uri)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+pg8000")
    return url


# Connections a service holds besides its workers': the outbox relay, the retention sweep and
# one more background loop (notification's mail sender, a gateway's feed).
BACKGROUND_CONNECTIONS = 3


def engine_options(url, max_workers=10, pool_size=0):
    if url.get_backend_name() == "sqlite":
        # One connection per process: greenthreads queue for it cooperatively. Two SQLite
        # connections writing at once would make one spin in SQLite's C busy handler, which
        # blocks every greenthread (including the one holding the lock).
        return {"pool_size": 1, "max_overflow": 0, "pool_timeout": 30,
                "connect_args": {"check_same_thread": False, "timeout": 30}}
    # Kept open: one per worker (max_workers) and per background loop, so that a busy service
    # never opens and closes an overflow connection per request (a PostgreSQL connection costs
    # a few ms to open); the overflow is for a worker's second, short session (the inbox check
    # of a redelivered event). Not SQLAlchemy's pre-ping: ping_when_idle instead.
    # LIFO: the connection just checked in is the next one out, so a light load keeps reusing
    # one (never idle long enough to be pinged) and the rest stay idle until needed.
    return {"pool_size": pool_size or max_workers + BACKGROUND_CONNECTIONS,
            "max_overflow": max_workers, "pool_timeout": 10, "pool_use_lifo": True}


# A pooled connection idle longer than this is pinged (SELECT 1) before a worker gets it.
PING_AFTER_IDLE_SECONDS = 1.0


def ping_when_idle(engine):
    """Ping a pooled connection before use only if it has been idle PING_AFTER_IDLE_SECONDS.

    SQLAlchemy's pre-ping pings at every checkout: a round trip per RPC and per event, a fifth of
    a read's. What it guards against is a connection that died while it sat in the pool (the
    database restarted or failed over, an idle timeout cut it), and a restart takes longer than
    a second: a connection idle since before it is pinged, fails the ping, and the pool is
    renewed (every connection older than that failure is replaced, as pre-ping does), so no
    request fails for it. One checked in less than a second ago was working then; if it died
    since, its request fails as an unavailable database (503) and renews the pool the same way.
    """
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def idle_since(_dbapi_connection, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def ping(dbapi_connection, record, _proxy):
        since = record.info.pop("idle_since", None)  # none for a new connection
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:  # a connection that cannot SELECT 1 is of no use
            log.info("a pooled connection failed its ping (%s): renewing the pool",
                     type(exc).__name__)
            raise InvalidatePoolError(str(exc)) from exc


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine_for(uri, max_workers=10, pool_size=0, **overrides):
    """The engine a service uses for ``uri``; also used by migrations and the CLI."""
    url = normalize_url(uri)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        os.makedirs(os.path.dirname(os.path.abspath(url.database)), exist_ok=True)
    options = engine_options(url, max_workers, pool_size)
    options.update(overrides)
    engine = create_engine(url, **options)
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        ping_when_idle(engine)
    if url.drivername == "postgresql+pg8000":
        event.listen(engine, "do_connect", pg.connect)  # one round trip per statement
        read_only_sessions(engine)
        # An INSERT of many rows without RETURNING (a batch's inbox records) as multi-row
        # INSERTs, as SQLAlchemy's psycopg2 dialect does: pg8000's executemany runs it once per
        # row, a round trip each. Read when a statement compiles, so set before any does.
        engine.dialect.use_insertmanyvalues_wo_returning = True
    return engine


def commit_without_flush_wait(connection):
    """Let this transaction's COMMIT return before its WAL record is on disk (PostgreSQL's
    ``synchronous_commit`` off for it alone; nothing elsewhere).

    Only for a transaction that records work done at least once, whose loss is repaired by
    doing that work again: the relay marking events sent (lost: they are published again, and
    the inboxes absorb the copies), the mail sender claiming and marking mail (lost: the mail
    is sent again, as after a crash between the server's 250 and the marking). Only a crash of
    the database server loses it, with at most the last ~0.6 s of such commits; a later
    synchronous COMMIT flushes it along with its own. What it saves: a wait for the disk that
    the request's own COMMIT would otherwise queue behind. Call it first in the transaction;
    on pg8000 it costs no round trip (services/kit/pg.py). Elsewhere it does nothing (SQLite
    runs with ``synchronous=NORMAL`` already).
    """
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")


READ_ONLY = "read_only"  # in a Session's and a connection's ``info``: no transaction, no writes


class WriteInReadOnly(RuntimeError):
    """A statement that writes, run by a worker of an ``@rpc(read_only=True)`` method."""


def read_only_sessions(engine):
    """A session whose ``info`` has READ_ONLY runs its statements on a connection in autocommit:
    no BEGIN before them, no COMMIT after (pg8000 skips a COMMIT outside a transaction,
    services/kit/pg.py). Under READ COMMITTED each statement sees its own snapshot inside a
    transaction too, so a read sees what it would have seen. A write there would commit at once
    and outlive the method's failure: it is refused. The connection leaves autocommit when it
    goes back to the pool."""

    @event.listens_for(engine, "checkin")
    def end_read_only(dbapi_connection, record):
        if record.info.pop(READ_ONLY, False) and dbapi_connection is not None:  # None: invalidated
            dbapi_connection.autocommit = False

    @event.listens_for(engine, "before_cursor_execute")
    def refuse_writes(connection, _cursor, statement, _parameters, context, _executemany):
        if connection.info.get(READ_ONLY) and context is not None and (
                context.isinsert or context.isupdate or context.isdelete):
            raise WriteInReadOnly(f"a read-only method wrote: {statement[:80]}")


def begin_read_only(session, _transaction, connection):
    """``after_begin`` of every worker session: a READ_ONLY one's connection goes to autocommit
    (unless its ping already opened a transaction, which it then simply commits)."""
    if not session.info.get(READ_ONLY) or connection.dialect.driver != "pg8000":
        return
    dbapi_connection = connection.connection.dbapi_connection
    connection.info[READ_ONLY] = True
    if not dbapi_connection._in_transaction:
        dbapi_connection.autocommit = True


# unique constraints and indexes -----------------------------------------------------------

def raises_conflict(message, fields=None):
    """``info`` of a named unique constraint (or index) that a caller can break by asking twice::

        UniqueConstraint("user_id", "course_id", name="uq_enrollments_user_course",
                         info=raises_conflict(ALREADY_ENROLLED))

    A worker whose write breaks it fails with ``Conflict(message, fields)`` (map_conflicts).
    """
    return {"conflict": (message, fields or {})}


# SQLite names the columns, not the constraint: "UNIQUE constraint failed: t.a, t.b"
SQLITE_UNIQUE_FAILED = re.compile(r"UNIQUE constraint failed: (?P<columns>.+)$")
PG_UNIQUE_VIOLATION = "23505"


def declared_conflicts(metadata):
    """{constraint name or (table, columns): (message, fields)} of ``metadata``'s unique
    constraints and indexes declared with raises_conflict()."""
    declared = {}
    for table in metadata.tables.values():
        for item in (*table.constraints, *table.indexes):
            conflict = item.info.get("conflict")
            if conflict is None:
                continue
            if not item.name or (isinstance(item, Index) and not item.unique):
                raise ValueError(f"raises_conflict() on {table.name}: only on a named unique "
                                 f"constraint or index (its name is how PostgreSQL reports it)")
            declared[item.name] = conflict
            declared[(table.name, frozenset(column.name for column in item.columns))] = conflict
    return declared


def violated_unique(dbapi_error):
    """The constraint name (PostgreSQL through pg8000) or (table, columns) (SQLite) a unique
    violation reports; None for any other error."""
    fields = dbapi_error.args[0] if dbapi_error.args else None
    if isinstance(fields, dict):  # pg8000: the server's error fields; "n" is the constraint
        return fields.get("n") if fields.get("C") == PG_UNIQUE_VIOLATION else None
    found = SQLITE_UNIQUE_FAILED.match(str(dbapi_error))
    if found is None:
        return None
    qualified = [name.strip().split(".") for name in found["columns"].split(",")]
    tables = {parts[0] for parts in qualified if len(parts) == 2}
    if len(tables) != 1 or any(len(parts) != 2 for parts in qualified):
        return None
    return tables.pop(), frozenset(parts[1] for parts in qualified)


def map_conflicts(engine, metadata):
    """Make ``engine`` raise the declared Conflict for a write that breaks a unique constraint
    of ``metadata`` declared with raises_conflict(), wherever the write runs (a command's
    ``flush()``, the kit's commit); every other error is left as it is."""
    declared = declared_conflicts(metadata)
    if not declared:
        return

    def to_conflict(context):
        if not isinstance(context.sqlalchemy_exception, IntegrityError):
            return None
        conflict = declared.get(violated_unique(context.original_exception))
        if conflict is None:
            return None
        message, fields = conflict
        return Conflict(message, dict(fields))

    event.listen(engine, "handle_error", to_conflict)


# the unit of work ---------------------------------------------------------------------------

def end_transaction(session, exc_info):
    """End a worker's transaction: commit if the worker succeeded, else roll back.

    Returns the worker's ``exc_info``, or the commit's when the commit failed (rolled back then).
    """
    if exc_info is None:
        try:
            session.commit()
            return None
        except Conflict as exc:  # another worker committed the same unique key first
            log.warning("commit refused: %s", exc)
            exc_info = sys.exc_info()
        except Exception:
            log.exception("commit failed")
            exc_info = sys.exc_info()
    rollback(session)
    return exc_info


# SQLite's OperationalErrors that pass (its others, "no such table" among them, are bugs or a
# missing migration: the caller's 500)
SQLITE_UNAVAILABLE = ("database is locked", "unable to open database")


def unreachable_database(exc_info, service_name):
    """``exc_info`` as the caller should see it: a worker failed by its database's connection
    (refused, closed under it, none free in the pool in time, SQLite's file locked) fails with
    ServiceUnavailable, which the gateway answers 503 with Retry-After, not with the driver's
    error (a 500)."""
    exc = exc_info[1] if exc_info else None
    if isinstance(exc, (InterfaceError, PoolTimeout)) or (
            isinstance(exc, DBAPIError) and exc.connection_invalidated) or (
            isinstance(exc, OperationalError)
            and any(text in str(exc.orig) for text in SQLITE_UNAVAILABLE)):
        try:
            raise ServiceUnavailable(f"{service_name}: database unavailable "
                                     f"({type(exc).__name__})") from exc
        except ServiceUnavailable:
            return sys.exc_info()
    return exc_info


def rollback(session):
    """Roll a failed worker's transaction back (it frees SQLite's one connection); a rollback
    that fails too (the database went away) is logged, not raised: the connection is dropped."""
    try:
        session.rollback()
    except Exception:
        log.warning("rollback failed", exc_info=True)


def find_database(container, user):
    """The container's one ``Database`` (``user`` names who needs it, for the error)."""
    databases = [dep for dep in container.dependencies if isinstance(dep, Database)]
    if len(databases) != 1:
        raise RuntimeError(
            f"{user} of service {container.service_name!r} needs exactly one "
            f"services.kit.Database dependency (it has {len(databases)})")
    return databases[0]


def find_model(declarative_base, mixin):
    for mapper in declarative_base.registry.mappers:
        if issubclass(mapper.class_, mixin):
            return mapper.class_
    return None


def database_uri(config, service_name, base_name="Base"):
    return DB_URIS.read(config)[f"{service_name}:{base_name}"]


class Database(nameko_sqlalchemy.Database):
    """nameko-sqlalchemy's per-worker session, with our engine settings, outbox and inbox.

    For a worker of an ``@event_handler`` the inbox record of its event (of each of its events, for
    a ``@batch_event_handler``) is added to the worker's session before the handler runs, so
    whatever the handler writes commits together with it; the handler does not commit: the kit
    does, and acknowledges the messages only after that. The unique constraints of the models
    declared with raises_conflict() raise their Conflict (map_conflicts).
    """

    def setup(self):
        service_name = self.container.service_name
        self.db_uri = database_uri(self.container.config, service_name,
                                   self.declarative_base.__name__)
        config = self.container.config
        self.engine = create_engine_for(self.db_uri, MAX_WORKERS.read(config),
                                        DB_POOL_SIZE.read(config),
                                        **self.engine_options)
        map_conflicts(self.engine, self.declarative_base.metadata)
        self._ended = weakref.WeakSet()  # workers whose transaction end_transaction() ended
        self.Session = nameko_sqlalchemy.database.sessionmaker(
            bind=self.engine, class_=nameko_sqlalchemy.database.Session, **self.session_options)
        event.listen(self.Session, "after_begin", begin_read_only)

    def stop(self):
        # nameko stops the dependencies before the sub-extensions, so the outbox relay's and the
        # retention sweep's last pass come after this: the pool's connections are closed, but the
        # engine stays (nameko-sqlalchemy deletes it) for that pass to open one of its own.
        self.engine.dispose()

    # found on first use, not in setup(): other extensions' setup() may run before this one's;
    # kept, since every worker of a handler (each event of a batch) and every relay pass asks
    @functools.cached_property
    def outbox_model(self):
        return find_model(self.declarative_base, OutboxEventMixin)

    @functools.cached_property
    def inbox_model(self):
        return find_model(self.declarative_base, InboxRecordMixin)

    @functools.cached_property
    def inbox_horizon_model(self):
        return find_model(self.declarative_base, InboxHorizonMixin)

    def worker_setup(self, worker_ctx):
        # An event handler's worker: its inbox records go in before the handler runs, so that
        # whatever it writes commits with them (inbox.py).
        if getattr(worker_ctx.entrypoint, READ_ONLY, False):
            self.worker_session(worker_ctx).info[READ_ONLY] = True
        inbox = getattr(worker_ctx.entrypoint, "inbox", None)
        if inbox is not None:
            inbox.record(self.worker_session(worker_ctx),
                         worker_ctx.entrypoint.events_of(worker_ctx))

    def worker_session(self, worker_ctx):
        return self.dbs[worker_ctx].session

    def end_transaction(self, worker_ctx, exc_info):
        """The unit of work of an @rpc worker (end_transaction above); a database that could not
        be reached is the caller's ServiceUnavailable (unreachable_database)."""
        self._ended.add(worker_ctx)
        return unreachable_database(end_transaction(self.worker_session(worker_ctx), exc_info),
                                    self.container.service_name)

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        # An @rpc worker started without its entrypoint's handle_result (nameko's
        # entrypoint_hook does that) has its transaction ended here, by the same rule.
        if (getattr(worker_ctx.entrypoint, "ends_transaction", False)
                and worker_ctx not in self._ended):
            self.end_transaction(worker_ctx, exc_info)

    def require(self, model, mixin_name, user):
        if model is None:
            raise RuntimeError(
                f"{user} of service {self.container.service_name!r} needs a model using "
                f"{mixin_name} on {self.declarative_base.__name__} (see services/kit/db.py)")
