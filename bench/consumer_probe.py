"""``python -m bench.consumer_probe --service analytics|notification [--events N] [--runs R]
[--code DIR ...]``: one real consumer service, alone, with a backlog of course.enrolled events,
on PostgreSQL.

Per run: a fresh ``kn_bench_probe_*`` database (migrated; notification's contacts and courses
loaded, so that no event needs an RPC) and a throwaway vhost; the service is started as
bench/scale.py starts it (same config: 4 workers, prefetch 20, ``MAIL_BACKEND`` log), then N
events with the contract's payload are published straight to ``knowledge_nest_events``
(faster than it handles them: a backlog). Measured: events/s from ``inbox_records.processed_at``
(bench/scale.py's ``backlog_rate``), and per event: the service's CPU, its PostgreSQL backends'
CPU, transactions committed (pg_stat_database), SQL statements and round trips (counted in the
service process, bench/probe_service.py). ``--code DIR`` runs the service from another checkout
(e.g. ``git archive`` of the base commit), several for interleaved A/B runs; ``--profile``
writes a cProfile of each run's service process.
"""
import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import pika
import psutil
import yaml

from bench import procs
from bench.ceiling import parameters
from bench.dbs import Databases
from bench.harness import ROOT, wait_for
from bench.scale import backlog_rate, parse_datetime

CONSUMERS = {"analytics": "analytics.record_event",
             "notification": "notification.confirm_enrollment"}
USERS, COURSES = 1000, 100


def config(vhost, db_url, service):
    return {
        "AMQP_URI": vhost.amqp_uri, "HEARTBEAT": 15, "PREFETCH_COUNT": 20, "RPC_TIMEOUT": 30,
        "PUBLISH_CONFIRM_TIMEOUT": 10, "EVENT_RETRY_DELAYS": [1, 5, 30],
        "JWT_SECRET": "bench-only-secret-0123456789-0123456789-abcdefgh", "MAIL_BACKEND": "log",
        "ENVIRONMENT": "development", "OUTBOX_POLL_INTERVAL": 1, "max_workers": 4,
        "DB_URIS": {f"{service}:Base": db_url},
        "LOGGING": {"version": 1, "disable_existing_loggers": False,
                    "handlers": {"console": {"class": "logging.StreamHandler"}},
                    "root": {"level": "WARNING", "handlers": ["console"]}},
    }


def load(dbs, service):
    if service != "notification":
        return
    with dbs.engine(service).begin() as conn:
        from sqlalchemy import text
        conn.execute(text("INSERT INTO contacts (user_id, email, name, updated_at) SELECT i, "
                          "'user' || i || '@bench.invalid', 'User ' || i, now() "
                          f"FROM generate_series(1, {USERS}) i"))
        conn.execute(text("INSERT INTO courses (course_id, title, instructor_id, updated_at) "
                          f"SELECT i, 'Course ' || i, 1 + i % 50, now() "
                          f"FROM generate_series(1, {COURSES}) i"))


def publish(vhost, n):
    connection = pika.BlockingConnection(parameters(vhost.amqp_uri))
    channel = connection.channel()
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    for i in range(n):
        event_id = uuid.uuid4().hex
        body = json.dumps({"event_id": event_id, "event_type": "course.enrolled",
                           "timestamp": now, "source": "course", "version": 1,
                           "data": {"enrollment_id": i + 1, "user_id": i % USERS + 1,
                                    "course_id": i % COURSES + 1,
                                    "course_title": f"Course {i % COURSES + 1}"}})
        channel.basic_publish("knowledge_nest_events", "course.enrolled", body,
                              pika.BasicProperties(message_id=event_id, app_id="course",
                                                   content_type="application/json",
                                                   delivery_mode=2))
    connection.close()


def backend_cpu(dbs, service):
    pids = [row[0] for row in dbs.query(
        service, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()")]
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def db_stats(dbs, service):
    return dbs.query(service, "SELECT xact_commit, xact_rollback FROM pg_stat_database "
                     "WHERE datname = current_database()")[0]


def run_once(service, n, code, tmp, profile, label):
    name = f"kn_bench_probe_{uuid.uuid4().hex[:6]}"
    dbs = Databases("postgresql", name, tmp)
    vhost = procs.CtlVhost(name)
    counts_path = os.path.join(tmp, f"{label}.counts.json")
    proc = None
    try:
        from services.kit.migrations import upgrade
        dbs.create(service)
        upgrade(service, dbs.url(service))
        load(dbs, service)
        vhost.__enter__()
        consumer = CONSUMERS[service]
        proc = procs.Service(label, [], {}, tmp, lambda: vhost.consumers(consumer) > 0)
        config_path = os.path.join(tmp, f"{label}.yml")
        with open(config_path, "w") as handle:
            yaml.safe_dump(config(vhost, dbs.url(service), service), handle)
        env = dict(os.environ, PYTHONPATH=code)
        if profile:
            env["PROBE_CPROFILE"] = os.path.join(tmp, f"{label}.prof")
        proc.log_path = os.path.join(tmp, f"{label}.log")
        proc.log = open(proc.log_path, "wb")
        # run from ``code``: its services package comes first on the path (counts["code"])
        proc.popen = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "bench", "probe_service.py"), counts_path,
             "run", "--config", config_path, f"services.{service}.service"],
            cwd=code, env=env, stdout=proc.log, stderr=subprocess.STDOUT)
        proc.proc = psutil.Process(proc.popen.pid)
        proc.wait_ready(time.monotonic() + 60)
        time.sleep(1)  # its pool's first connections, the sender's first sweep
        cpu0 = sum(proc.proc.cpu_times()[:2])
        pg0, (commits0, rollbacks0) = backend_cpu(dbs, service), db_stats(dbs, service)
        started = dt.datetime.now(dt.timezone.utc)
        publish(vhost, n)
        query = "SELECT processed_at FROM inbox_records WHERE processed_at >= :started"
        wait_for(lambda: len(dbs.query(service, query, started=started)) >= n, 600,
                 f"{consumer}: {n} events")
        if service == "notification":  # and mailed: the sender's work is part of the cost
            wait_for(lambda: dbs.scalar(service, "SELECT count(*) FROM notifications "
                                        "WHERE status = 'sent'") >= n, 120, "mail sent")
        cpu = sum(proc.proc.cpu_times()[:2]) - cpu0
        pg_cpu = backend_cpu(dbs, service) - pg0
        commits1, rollbacks1 = db_stats(dbs, service)
        times = [parse_datetime(row[0]).timestamp()
                 for row in dbs.query(service, query, started=started)]
        result = {"rate": backlog_rate(times), "cpu_ms": 1000 * cpu / n,
                  "pg_cpu_ms": 1000 * pg_cpu / n,
                  # the probe's own queries count too (a few per 20 ms poll): an upper bound
                  "xacts": (commits1 - commits0 + rollbacks1 - rollbacks0) / n}
    finally:
        try:
            if proc is not None:
                proc.stop()
            vhost.__exit__(None, None, None)
        finally:
            dbs.drop_all()
    with open(counts_path) as handle:
        counts = json.load(handle)
    result.update(statements=sum(counts["statements"].values()) / n,
                  round_trips=counts["flushes"] / n, commits=counts["commits"] / n,
                  code=counts["code"], top=list(counts["statements"].items())[:12])
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--service", choices=sorted(CONSUMERS), required=True)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=2, help="rounds over every --code")
    parser.add_argument("--code", action="append", help="checkout to run (default: this one)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", help="directory for profiles and counts (default: a temp dir)")
    args = parser.parse_args(argv)
    codes = args.code or [ROOT]
    out = args.out or tempfile.mkdtemp(prefix="consumer_probe_")
    os.makedirs(out, exist_ok=True)
    results = {code: [] for code in codes}
    for round_ in range(args.runs):
        for index, code in enumerate(codes):
            label = f"{args.service}_{index}_{round_}"
            result = run_once(args.service, args.events, code, out, args.profile, label)
            results[code].append(result)
            print(f"[{time.strftime('%H:%M:%S')}] {label} {code}: {result['rate']:.0f} events/s, "
                  f"service CPU {result['cpu_ms']:.2f} ms/event, PostgreSQL CPU "
                  f"{result['pg_cpu_ms']:.2f} ms/event, {result['statements']:.1f} statements, "
                  f"{result['round_trips']:.1f} round trips, {result['commits']:.2f} commits "
                  f"(server xacts {result['xacts']:.2f}) per event; load "
                  f"{os.getloadavg()[0]:.1f}", flush=True)
            for sql, count in result["top"]:
                print(f"    {count / args.events:6.2f}/event  {sql}")
    for code, runs in results.items():
        print(f"{code}: events/s {[round(r['rate']) for r in runs]}, median "
              f"{statistics.median(r['rate'] for r in runs):.0f}; service CPU ms/event "
              f"{[round(r['cpu_ms'], 2) for r in runs]}")
    print(f"profiles and counts in {out}")


if __name__ == "__main__":
    main()
