"""``python bench/probe_service.py OUT.json nameko-args...``: ``nameko run`` with every SQL
statement and every PostgreSQL round trip of the process counted (and cProfile'd with
``PROBE_CPROFILE=path``), written to OUT.json when the service stops. Used by
bench/consumer_probe.py."""
import eventlet

eventlet.monkey_patch()  # as nameko run does, before anything else is imported

import atexit  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402


def main():
    out, args = sys.argv[1], sys.argv[2:]
    import pg8000.core
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from services.kit import pg

    counts = {"statements": collections.Counter(), "flushes": 0, "commits": 0, "rollbacks": 0,
              "flush_callers": collections.Counter()}  # by the 6 frames that flushed

    def statement(_conn, _cursor, sql, _params, _context, _many):
        counts["statements"][re.sub(r"\s+", " ", sql)[:160]] += 1

    event.listen(Engine, "before_cursor_execute", statement)
    event.listen(Engine, "commit", lambda _conn: counts.__setitem__(
        "commits", counts["commits"] + 1))
    event.listen(Engine, "rollback", lambda _conn: counts.__setitem__(
        "rollbacks", counts["rollbacks"] + 1))

    # a flush of pg8000's socket is one round trip (the kit's connection sends a statement's
    # messages at once, pg.py); BEGIN, pre-ping and COMMIT go through it too
    def counting(flush):
        def counted(sock):
            counts["flushes"] += 1
            frame = sys._getframe(1)
            where = []
            while frame is not None and len(where) < 6:
                where.append(f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:"
                             f"{frame.f_code.co_name}")
                frame = frame.f_back
            counts["flush_callers"][" < ".join(where)] += 1
            return flush(sock)
        return counted
    pg8000.core._flush = counting(pg8000.core._flush)
    if hasattr(pg, "_flush"):
        pg._flush = counting(pg._flush)

    import services

    def dump():
        with open(out, "w") as handle:
            json.dump(dict(counts, code=os.path.dirname(services.__file__),
                           statements=dict(counts["statements"].most_common()),
                           flush_callers=dict(counts["flush_callers"].most_common())),
                      handle, indent=1)
    atexit.register(dump)

    import nameko.cli.main
    sys.argv = ["nameko", *args]
    profile_to = os.environ.get("PROBE_CPROFILE")
    if not profile_to:
        return nameko.cli.main.main()
    import cProfile
    profiler = cProfile.Profile()
    atexit.register(lambda: profiler.dump_stats(profile_to))  # runs before dump(): LIFO
    profiler.enable()
    try:
        return nameko.cli.main.main()
    finally:
        profiler.disable()


if __name__ == "__main__":
    sys.exit(main())
