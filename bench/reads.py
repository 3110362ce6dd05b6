"""``python -m bench.reads [--requests N] [--reads A,B] [--profile SERVICE]``: what one read costs.

One suite with small data on PostgreSQL (bench/scale.py's ``Side``: its own vhost, made with
rabbitmqctl unless BENCH_MGMT=1, and ``kn_bench_*`` databases, dropped after), then N requests
at 1 client of each read below. For each: p50/p99, and the CPU time per request of every
process (psutil user + system over the read's requests, minus the process's idle CPU per
second measured first: the gateway, each service, the broker, the load generator), which is
what a request costs the machine however busy it is. ``--profile SERVICE`` (repeatable) runs
that service under cProfile timed by CPU (BENCH_CPROFILE=cpu); its stats go to
OUT/profile-SERVICE.prof at the end. Nothing is written to bench/results*. bench/NOTES.md,
"One read's CPU", has what it found.
"""
import argparse
import json
import os
import shutil
import tempfile
import time
import uuid

from bench import procs
from bench.load import closed_loop, percentile
from bench.scale import QUICK, Side, event_span, log

READS = ["course", "courses.first", "reviews", "events", "summary", "notifications"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--reads", default=",".join(READS))
    parser.add_argument("--profile", action="append", default=[], metavar="SERVICE")
    parser.add_argument("--idle", type=float, default=5.0,
                        help="seconds of idle CPU measured first (subtracted)")
    parser.add_argument("--out", default=".")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args(argv)
    sizes = dict(QUICK)
    # as small's density in bench/scale.py; enough rows for full pages of 20
    sizes["small"] = dict(users=200, courses=100, enrollments=2000, events=2000, reviews=1000)
    tmp = tempfile.mkdtemp(prefix="kn-bench-reads-")
    side = Side("small", sizes["small"], f"kn_bench_{uuid.uuid4().hex[:8]}", tmp, {},
                event_span(dict(large=sizes["small"], small=sizes["small"]), "small"))
    if os.environ.get("BENCH_MGMT") != "1":
        side.vhost = procs.CtlVhost(side.vhost.name)
    results = {}
    try:
        side.prepare()
        if args.profile:
            os.environ["BENCH_CPROFILE"] = "cpu"
            original = procs.Service.start

            def start(service, cwd):
                name = service.label.split("_", 1)[1]
                if name in args.profile:
                    service.profile_to = os.path.abspath(
                        os.path.join(args.out, f"profile-{name}.prof"))
                original(service, cwd)
            procs.Service.start = start
        side.start()
        meter = procs.Meter(side.services)
        # what each process spends idle (background loops, heartbeats), per second: taken
        # out of each read's figures
        closed_loop(side.url, 1, 20, side.request_maker("course", 0))
        idle_before, idle_started = meter._cpu(), time.monotonic()
        time.sleep(args.idle)
        idle_after, idle_seconds = meter._cpu(), time.monotonic() - idle_started
        idle = {label: (idle_after[label] - idle_before[label]) / idle_seconds
                for label in idle_after if label in idle_before}
        log("idle cpu ms/s " + str({k.replace("small_", ""): round(1000 * v, 1)
                                    for k, v in idle.items()}))
        for key in args.reads.split(","):
            make = side.request_maker(key, 1)
            closed_loop(side.url, 1, 20, make)  # warm: connections, caches, imports
            before = meter._cpu()
            ok, errors, seconds, lat = closed_loop(side.url, 1, args.requests, make,
                                                   deadline_seconds=600)
            after = meter._cpu()
            if errors:
                raise RuntimeError(f"{key}: {errors} failed requests")
            cpu = {label.replace("small_", ""):
                   round(1000 * (after[label] - before[label] - idle.get(label, 0) * seconds)
                         / ok, 2)
                   for label in after if label in before}
            results[key] = {"p50": round(percentile(lat, 50), 2),
                            "p99": round(percentile(lat, 99), 2),
                            "cpu_ms_per_request": {k: v for k, v in cpu.items() if v >= 0.05}}
            log(f"{key:14s} p50 {results[key]['p50']:6.2f} ms  p99 {results[key]['p99']:6.2f} ms"
                f"  cpu ms/req {results[key]['cpu_ms_per_request']}")
    finally:
        side.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return results


if __name__ == "__main__":
    main()
