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

and its service class declares ``db = Database(Base)``. Entrypoints use ``self.db.session``.
"""
import functools
import os
from datetime import datetime, timezone

import nameko_sqlalchemy
from sqlalchemy import (
    BigInteger, DateTime, Integer, String, Text, create_engine, event, select, text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from services.kit import pg
from services.kit.errors import ServiceUnavailable

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
POOL_SIZE_CONFIG_KEY = "DB_POOL_SIZE"  # 0 or absent: max_workers + BACKGROUND_CONNECTIONS


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
    # of a redelivered event). pre-ping: a database that went away and came back costs one
    # failed request, not all.
    return {"pool_size": pool_size or max_workers + BACKGROUND_CONNECTIONS,
            "max_overflow": max_workers, "pool_pre_ping": True, "pool_timeout": 10}


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
    elif url.drivername == "postgresql+pg8000":
        event.listen(engine, "do_connect", pg.connect)  # one round trip per statement
    return engine


def find_model(declarative_base, mixin):
    for mapper in declarative_base.registry.mappers:
        if issubclass(mapper.class_, mixin):
            return mapper.class_
    return None


def database_uri(config, service_name, base_name="Base"):
    return config["DB_URIS"][f"{service_name}:{base_name}"]


class Database(nameko_sqlalchemy.Database):
    """nameko-sqlalchemy's per-worker session, with our engine settings, outbox and inbox.

    For a worker of an ``@event_handler`` the inbox record of its event (of each of its events, for
    a ``@batch_event_handler``) is added to the worker's session before the handler runs, so
    whatever the handler writes commits together with it; the handler does not commit: the kit
    does, and acknowledges the messages only after that.
    """

    def setup(self):
        service_name = self.container.service_name
        self.db_uri = database_uri(self.container.config, service_name,
                                   self.declarative_base.__name__)
        config = self.container.config
        self.engine = create_engine_for(self.db_uri, int(config.get("max_workers", 10)),
                                        int(config.get(POOL_SIZE_CONFIG_KEY) or 0),
                                        **self.engine_options)
        self.Session = nameko_sqlalchemy.database.sessionmaker(
            bind=self.engine, class_=nameko_sqlalchemy.database.Session, **self.session_options)

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
        inbox_entries = getattr(worker_ctx.entrypoint, "inbox_entries", None)
        if inbox_entries is not None:
            consumer, events = inbox_entries(worker_ctx)
            self.require(self.inbox_model, "InboxRecordMixin", "an @event_handler")
            self.worker_session(worker_ctx).add_all(
                [self.inbox_model(consumer=consumer, event_id=event.event_id,
                                  event_type=event.event_type) for event in events])

    def worker_session(self, worker_ctx):
        return self.dbs[worker_ctx].session

    def require(self, model, mixin_name, user):
        if model is None:
            raise RuntimeError(
                f"{user} of service {self.container.service_name!r} needs a model using "
                f"{mixin_name} on {self.declarative_base.__name__} (see services/kit/db.py)")

    # inbox ------------------------------------------------------------------------------------

    def has_processed(self, consumer, event_id):
        self.require(self.inbox_model, "InboxRecordMixin", "an @event_handler")
        with self.Session(close_on_exit=True) as session:
            found = session.execute(
                select(self.inbox_model.event_id).where(
                    self.inbox_model.consumer == consumer,
                    self.inbox_model.event_id == event_id)
            ).first()
            session.rollback()  # a read only: nothing to commit
        return found is not None

    def commit_worker(self, worker_ctx, consumer, event_id):
        """Commit the worker's session; True if committed, False if the event was a duplicate."""
        session = self.worker_session(worker_ctx)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            if self.has_processed(consumer, event_id):
                return False  # a concurrent delivery of the same event committed first
            raise
        return True


