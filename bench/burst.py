"""``python -m bench.burst [--quick]``: a burst of logins against auth's bounded argon2 queue.

auth (PostgreSQL, the default argon2id cost of config.yml and the default queues: one hash per
PASSWORD_HASH_PARALLELISM CPUs at once, waiting at most PASSWORD_HASH_MAX_WAIT; the gateway's
LOGIN_MAX_CONCURRENT logins at once, waiting at most LOGIN_MAX_WAIT) and a gateway run as
``nameko run`` processes. Users are written
in SQL with one real argon2 hash of their password (every login still verifies it in full).
N clients each log in back to back as their own user: every answer counted by status (200, or
503 from a full queue, at once, with ``Retry-After``; 429: a turn not come within RPC_TIMEOUT);
logins/s is 200s per second, p50/p99 are of the 200s. Each level runs ``--runs`` times; figures are medians.

Writes OUT/results-burst.json and re-renders OUT/results.md (bench/report.py).
"""
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid

from bench import procs
from bench.dbs import Databases
from bench.harness import ROOT, free_port, machine, run_header
from bench.load import _Client, percentile

PASSWORD = "correct horse battery staple 42"
FULL = dict(levels={10: 10, 50: 4})    # clients: logins each
QUICK = dict(levels={10: 2, 50: 1})


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def burst(url, clients, each):
    """``clients`` threads released at once, each logging in ``each`` times as its own user."""
    statuses, latencies, retry_after = {}, [], []
    lock = threading.Lock()
    gate = threading.Event()

    def client(number):
        conn = _Client(url)
        body = json.dumps({"email": f"burst{number}@bench.invalid", "password": PASSWORD}).encode()
        mine = []
        gate.wait()
        for _ in range(each):
            sent = time.perf_counter()
            status = conn.send("POST", "/api/auth/login",
                               {"Content-Type": "application/json"}, body)
            if status == 503:  # which 503: the queue's (Retry-After) or an RPC timeout's
                status = "503 busy" if conn.last_headers.get("Retry-After") else "503 other"
            mine.append((status, (time.perf_counter() - sent) * 1000.0))
        conn.close()
        with lock:
            for status, ms in mine:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    latencies.append(ms)
                elif status == "503 busy":
                    retry_after.append(ms)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    gate.set()
    for thread in threads:
        thread.join()
    return statuses, time.perf_counter() - started, latencies, retry_after


class BurstBench:
    def __init__(self, args):
        self.args = args
        self.sizes = QUICK if args.quick else FULL
        self.name = f"kn_bench_{uuid.uuid4().hex[:10]}"
        self.tmp = tempfile.mkdtemp(prefix="kn-bench-burst-")
        self.values = {}

    def record(self, key, value):
        self.values.setdefault(key, []).append(value)

    def run(self):
        from services.auth.passwords import make_hasher
        from services.kit.config import load_config
        from services.kit.migrations import upgrade
        started = time.time()
        # the suite's own defaults for the argon2 cost and the queue
        defaults = load_config(os.path.join(ROOT, "config.yml"))
        self.cost = {key: defaults[key] for key in defaults if key.startswith("PASSWORD_HASH_")}
        dbs = Databases("postgresql", self.name, self.tmp)
        services = []
        with procs.Vhost(self.name) as vhost:
            try:
                dbs.create("auth")
                upgrade("auth", dbs.url("auth"))
                password_hash = make_hasher(defaults).hash(PASSWORD)
                with dbs.engine("auth").begin() as conn:
                    from sqlalchemy import text
                    conn.execute(text(
                        "INSERT INTO users (email, password_hash, name, role, created_at) "
                        "SELECT 'burst' || i || '@bench.invalid', :hash, 'Burst ' || i, "
                        "'student', now() FROM generate_series(0, :n - 1) i"),
                        {"hash": password_hash, "n": max(self.sizes["levels"])})
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                base = {"AMQP_URI": vhost.amqp_uri, "max_workers": 10, "RPC_TIMEOUT": 5,
                        "JWT_SECRET": "bench-only-secret-0123456789-0123456789-abcdefgh",
                        "ENVIRONMENT": "development", "DB_POOL_SIZE": 4,
                        "DB_URIS": {"auth:Base": dbs.url("auth")},
                        "LOGGING": {"version": 1, "root": {"level": "WARNING"}}}
                base.update(self.cost)
                for label, target, extra, ready in (
                        ("auth", "services.auth.service", {},
                         lambda: vhost.consumers("rpc-auth") > 0),
                        ("gateway", "gateway.service", {"WEB_SERVER_ADDRESS": f"127.0.0.1:{port}"},
                         procs.http_ok(url + "/api/openapi.json"))):
                    services.append(procs.Service(label, [target], dict(base, **extra),
                                                  self.tmp, ready))
                for service in services:
                    service.start(ROOT)
                deadline = time.monotonic() + 120
                for service in services:
                    service.wait_ready(deadline)
                burst(url, 2, 1)  # warm
                for run in range(1, self.args.runs + 1):
                    for clients, each in self.sizes["levels"].items():
                        statuses, seconds, ok_ms, refused_ms = burst(url, clients, each)
                        ok = statuses.get(200, 0)
                        key = f"c{clients}"
                        self.record(f"{key}.ok", ok)
                        self.record(f"{key}.busy", statuses.get("503 busy", 0))
                        self.record(f"{key}.other", sum(v for s, v in statuses.items()
                                                        if s not in (200, "503 busy")))
                        self.record(f"{key}.logins_per_s", ok / seconds)
                        self.record(f"{key}.p50", percentile(ok_ms, 50))
                        self.record(f"{key}.p99", percentile(ok_ms, 99))
                        self.record(f"{key}.busy_p99", percentile(refused_ms, 99)
                                    if refused_ms else 0.0)
                        log(f"run {run}, {clients} at once x {each}: {statuses}, "
                            f"{ok / seconds:.1f} logins/s, p99 {percentile(ok_ms, 99):.0f} ms")
                        time.sleep(1)  # the queue drains between levels
            finally:
                for service in services:
                    service.terminate()
                for service in services:
                    service.stop()
                dbs.drop_all()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return {"mode": "quick" if self.args.quick else "full", "runs": self.args.runs,
                "database": "postgresql", "seconds": round(time.time() - started, 1),
                "machine": machine("postgresql"), "sizes": self.sizes, "cost": self.cost,
                "values": self.values,
                "medians": {k: statistics.median(v) for k, v in self.values.items()}}


def markdown_section(result):
    m = result["medians"]
    cost = result["cost"]
    lines = ["## Bursts of logins (auth's bounded argon2 queue)", "",
             run_header(result, "python -m bench.burst" + (" --quick" if result["mode"] == "quick"
                                                            else "")), "",
             "argon2id as configured by default: "
             + ", ".join(f"{k} {v}" for k, v in sorted(cost.items()))
             + " (concurrency empty: one hash per PASSWORD_HASH_PARALLELISM CPUs, at least one; "
             "queue empty: bounded by PASSWORD_HASH_MAX_WAIT, 2 s; the gateway's defaults: "
             "LOGIN_MAX_CONCURRENT 4, LOGIN_MAX_WAIT 2 s). Each client logs in as "
             "its "
             "own user, back to back; medians of the runs. p50/p99 are of the 200s; a 503 is "
             "answered at once (its p99 in the last column); \"other\" is any other answer (a 503 "
             "without Retry-After is an RPC timeout).", "",
             "| clients at once | logins each | 200 | 503 (queue full) | other | logins/s | p50 ms | "
             "p99 ms | 503 p99 ms |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for clients, each in result["sizes"]["levels"].items():
        k = f"c{clients}"
        lines.append(f"| {clients} | {each} | {m[k + '.ok']:.0f} | {m[k + '.busy']:.0f} | "
                     f"{m[k + '.other']:.0f} | {m[k + '.logins_per_s']:.1f} | {m[k + '.p50']:.0f} | "
                     f"{m[k + '.p99']:.0f} | {m[k + '.busy_p99']:.0f} |")
    return "\n".join(lines) + "\n"


def check_complete(result):
    m = result["medians"]
    return [f"c{c}.{stat}" for c in result["sizes"]["levels"]
            for stat in ("ok", "logins_per_s", "p99") if not m.get(f"c{c}.{stat}", 0) > 0]


def main(argv=None):
    from bench import report
    return report.run_main(argv, "python -m bench.burst", __doc__, BurstBench, "results-burst.json", markdown_section,
                           check_complete, quick_help="small sizes")


if __name__ == "__main__":
    sys.exit(main())
