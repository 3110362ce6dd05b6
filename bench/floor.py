"""``python -m bench.floor``: what one event costs a per-event consumer before nameko and the
broker add anything: the kit's transaction alone (inbox record + the handler's row, ORM flush,
COMMIT), in one process, sequentially, on SQLite (the kit's settings) and PostgreSQL.

bench/results.md's consumer target (2,000 events/s with ``event_handler``) leaves 0.5 ms per
event for everything; this says how much of that the transaction alone takes.
"""
import datetime as dt
import statistics
import sys
import tempfile
import time
import uuid

from bench.dbs import Databases
from bench.kit_services import Base, InboxRecord, Received
from services.kit.db import create_engine_for
import nameko_sqlalchemy


def orm_session(engine, count):
    """What the kit does per event: a session, two ORM objects, flush and COMMIT."""
    Session = nameko_sqlalchemy.database.sessionmaker(bind=engine,
                                                      class_=nameko_sqlalchemy.database.Session)
    started = time.perf_counter()
    for _ in range(count):
        event_id = uuid.uuid4().hex
        session = Session()
        session.add(InboxRecord(consumer="floor", event_id=event_id, event_type="bench.event"))
        session.add(Received(event_id=event_id, user_id=1))
        session.commit()
        session.close()
    return 1000.0 * (time.perf_counter() - started) / count


def core_connection(engine, count):
    """The same two rows with SQLAlchemy Core on a pooled connection: no ORM."""
    inbox, received = InboxRecord.__table__, Received.__table__
    started = time.perf_counter()
    for _ in range(count):
        event_id = uuid.uuid4().hex
        with engine.begin() as conn:
            conn.execute(inbox.insert().values(consumer="floor", event_id=event_id,
                                               event_type="bench.event",
                                               processed_at=dt.datetime.now(dt.timezone.utc)))
            conn.execute(received.insert().values(event_id=event_id, user_id=1))
    return 1000.0 * (time.perf_counter() - started) / count


def driver(engine, count):
    """The same two INSERTs and COMMIT on the DB-API connection itself: the database's floor."""
    raw = engine.raw_connection()
    cursor = raw.cursor()
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    now = dt.datetime.now(dt.timezone.utc)
    started = time.perf_counter()
    for _ in range(count):
        event_id = uuid.uuid4().hex
        cursor.execute(f"INSERT INTO inbox_records (consumer, event_id, event_type, processed_at) "
                       f"VALUES ({mark}, {mark}, {mark}, {mark})",
                       ("floor", event_id, "bench.event", now))
        cursor.execute(f"INSERT INTO received (event_id, user_id) VALUES ({mark}, {mark})",
                       (event_id, 1))
        raw.commit()
    seconds = time.perf_counter() - started
    raw.close()
    return 1000.0 * seconds / count


WAYS = {"kit (ORM session)": orm_session, "SQLAlchemy Core": core_connection,
        "DB-API driver": driver}


def main(argv=None):
    count, runs = (int(argv[0]) if argv else 2000), 3
    results = {}
    tmp = tempfile.mkdtemp(prefix="kn-bench-floor-")
    dbs = Databases("postgresql", f"kn_bench_{uuid.uuid4().hex[:10]}", tmp)
    try:
        dbs.create("floor")
        for kind, url in (("sqlite", f"sqlite:///{tmp}/floor.db"), ("postgresql", dbs.url("floor"))):
            engine = create_engine_for(url, pool_size=1)
            Base.metadata.create_all(engine)
            for name, way in WAYS.items():
                way(engine, 100)  # warm
            for _ in range(runs):  # interleaved: each way sees the same machine
                for name, way in WAYS.items():
                    results.setdefault((kind, name), []).append(way(engine, count))
            engine.dispose()
    finally:
        dbs.drop_all()
    for (kind, name), values in results.items():
        median = statistics.median(values)
        print(f"{kind:10s} {name:18s} {median:.3f} ms per event ({1000 / median:,.0f} events/s); "
              f"runs {', '.join(f'{v:.3f}' for v in values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
