"""``python -m bench.burst_probe [--clients 10] [--each 10] [--rounds 1]``: bench/burst.py's
setup with every login timed at each stage, to see which queue takes turns out of order.

The services run as bench/burst_trace.py (auth and the gateway, patched in their own process
only); the clients note their own send and receive. Per login: the stages' times; per queue
(the gateway's login turns, auth's RPC consumer and workers, auth's hashing turns): how many
were served before someone who had come to that queue earlier (overtakes), and the waits.
Writes nothing into bench/ (the traces go to a temp dir, printed).
"""
import argparse
import collections
import glob
import json
import os
import statistics
import tempfile
import threading
import time

from bench import burst as burst_bench
from bench import procs
from bench.load import _Client, percentile

TARGETS = {"services.auth.service": "bench.burst_trace:AuthService",
           "gateway.service": "bench.burst_trace:GatewayService"}


def traced_burst(url, clients, each, out):
    """bench/burst.py's ``burst``, noting each login's send and receive (wall clock)."""
    gate = threading.Event()
    lock = threading.Lock()

    def client(number):
        conn = _Client(url)
        email = f"burst{number}@bench.invalid"
        body = json.dumps({"email": email, "password": burst_bench.PASSWORD}).encode()
        mine = []
        gate.wait()
        for _ in range(each):
            sent = time.time()
            status = conn.send("POST", "/api/auth/login", {"Content-Type": "application/json"},
                               body)
            mine.append((email, sent, time.time(), status))
        conn.close()
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join()


def read_traces(directory):
    """{email: [(time, stage), ...]} in time order."""
    by_key = collections.defaultdict(list)
    for path in glob.glob(os.path.join(directory, "*.trace")):
        with open(path) as trace:
            for line in trace:
                stamp, stage, key = line.split()
                by_key[key].append((float(stamp), stage))
    for events in by_key.values():
        events.sort()
    return by_key


def logins(client_records, by_key):
    """One dict per login: stage -> time, from the stages of its user's trace within its own
    send and receive (a user's logins are back to back, the clocks are this machine's)."""
    result = []
    for email, sent, received, status in sorted(client_records, key=lambda r: r[1]):
        login = {"key": email, "client.sent": sent, "client.received": received,
                 "status": status}
        for stamp, stage in by_key.get(email, ()):
            if sent <= stamp <= received:
                login.setdefault(stage, stamp)
        result.append(login)
    return result


def overtakes(records, came, served):
    """How many logins were served (``served``) before one that came (``came``) earlier and was
    still waiting: each pair counted once."""
    pairs = [(r[came], r[served]) for r in records if came in r and served in r]
    count = 0
    for i, (came_a, served_a) in enumerate(pairs):
        for came_b, served_b in pairs[i + 1:]:
            if (came_a < came_b and served_a > served_b) or (came_b < came_a and served_b > served_a):
                count += 1
    return count, len(pairs)


# the first is no queue (the clients are independent): how far their requests overtake on the way
QUEUES = (("client -> gateway (arrive)", "client.sent", "gw.arrive"),
          ("gateway login turn", "gw.turn_requested", "gw.turn_acquired"),
          ("gateway RPC -> auth message", "gw.rpc_sent", "auth.message"),
          ("auth message -> worker", "auth.message", "auth.worker_start"),
          ("auth throttle.admit", "auth.admit_start", "auth.admit_end"),
          ("auth hashing turn", "hash.turn_requested", "hash.turn_acquired"),
          ("auth hash", "hash.turn_acquired", "hash.done"),
          ("auth after hash -> reply", "hash.done", "auth.reply_start"),
          # from the reply's start: its publish returns once confirmed, often after the
          # gateway has it
          ("auth reply -> gateway", "auth.reply_start", "gw.rpc_reply"),
          ("gateway done -> client", "gw.done", "client.received"),
          ("whole login", "client.sent", "client.received"))


def summary(records):
    lines = []
    for label, came, served in QUEUES:
        waits = [r[served] - r[came] for r in records if came in r and served in r]
        if not waits:
            continue
        count, n = overtakes(records, came, served)
        lines.append(f"{label:34s} n={n:4d} overtakes={count:5d}  wait p50 "
                     f"{percentile([w * 1000 for w in waits], 50):7.1f} ms  p99 "
                     f"{percentile([w * 1000 for w in waits], 99):7.1f} ms  max "
                     f"{max(waits) * 1000:7.1f} ms")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--each", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--trace-dir", default=None)
    args = parser.parse_args(argv)
    directory = args.trace_dir or tempfile.mkdtemp(prefix="kn-burst-trace-")
    os.environ["BURST_TRACE_DIR"] = directory
    records = []

    service_init = procs.Service.__init__

    def traced_service(self, label, targets, *rest, **kwargs):
        service_init(self, label, [TARGETS.get(t, t) for t in targets], *rest, **kwargs)
    procs.Service.__init__ = traced_service

    def burst(url, clients, each):
        if clients == 2 and each == 1:  # the warm-up
            return burst_bench.burst.__wrapped__(url, clients, each)
        mark = len(records)
        started = time.perf_counter()
        traced_burst(url, clients, each, records)
        mine = records[mark:]
        ok = [(r[2] - r[1]) * 1000 for r in mine if r[3] == 200]
        statuses = collections.Counter(r[3] for r in mine)
        burst_bench.log(f"{clients} x {each}: {dict(statuses)}, p50 {percentile(ok, 50):.0f} "
                        f"p99 {percentile(ok, 99):.0f} ms")
        return ({200: len(ok)}, time.perf_counter() - started, ok or [0.0], [])

    burst.__wrapped__ = burst_bench.burst
    burst_bench.burst = burst
    burst_bench.FULL = dict(levels={args.clients: args.each})
    bench = burst_bench.BurstBench(argparse.Namespace(quick=False, runs=args.rounds))
    bench.run()
    by_key = read_traces(directory)
    done = logins(records, by_key)
    with open(os.path.join(directory, "logins.json"), "w") as out:
        json.dump(done, out)
    print(f"traces and logins.json in {directory}")
    ok = [r for r in done if r["status"] == 200]
    print(summary(ok))  # the 200s: a refused login queued nowhere
    print(f"{len(ok)} x 200 of {len(done)}; whole login p50 "
          f"{statistics.median([(r['client.received'] - r['client.sent']) * 1000 for r in ok]):.0f} ms")


if __name__ == "__main__":
    main()
