"""``python -m bench.floor``: what one event costs a per-event consumer before nameko and the
broker add anything: the kit's transaction alone (inbox record + the handler's row, ORM flush,
COMMIT), in one process, sequentially, on SQLite (the kit's settings) and PostgreSQL.

bench/results.md's consumer target (2,000 events/s with ``event_handler``) leaves 0.5 ms per
event for everything; this says how much of that the transaction alone takes.
"""
import statistics
import sys
import tempfile
import time
import uuid

from bench.dbs import Databases
from bench.kit_services import Base, InboxRecord, Received
from services.kit.db import create_engine_for
import nameko_sqlalchemy


def per_event_ms(engine, count):
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


def main(argv=None):
    count, runs = 2000, 3
    results = {}
    tmp = tempfile.mkdtemp(prefix="kn-bench-floor-")
    dbs = Databases("postgresql", f"kn_bench_{uuid.uuid4().hex[:10]}", tmp)
    try:
        dbs.create("floor")
        for kind, url in (("sqlite", f"sqlite:///{tmp}/floor.db"), ("postgresql", dbs.url("floor"))):
            engine = create_engine_for(url, pool_size=1)
            Base.metadata.create_all(engine)
            per_event_ms(engine, 100)  # warm
            results[kind] = [per_event_ms(engine, count) for _ in range(runs)]
            engine.dispose()
    finally:
        dbs.drop_all()
    for kind, values in results.items():
        median = statistics.median(values)
        print(f"{kind}: {median:.3f} ms per event ({1000 / median:,.0f} events/s) for the "
              f"transaction alone; runs {', '.join(f'{v:.3f}' for v in values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
