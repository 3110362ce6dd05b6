"""``make bench`` / ``python -m bench [--quick]``: our suite against plain nameko and the raw broker.

Everything runs against the local broker in a throwaway vhost (management API, deleted after),
with SQLite databases in a temp dir; every service is a ``nameko run`` subprocess so psutil can
measure it. Each figure is the median of ``--runs`` runs (at least 3); each ratio is computed
within one run, then the median taken. Writes bench/results.md and bench/results.json.
"""
import argparse
import datetime as dt
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from importlib import metadata

import jwt
import psutil
import requests
from sqlalchemy import insert

from bench import ceiling, procs
from bench.dbs import Databases
from bench.load import closed_loop, open_loop, percentile
from services.kit.db import normalize_url

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
JWT_SECRET = "bench-only-secret-0123456789-0123456789-abcdefgh"
COURSES = 20
ANALYTICS_QUEUE = "analytics.record_event"
PHASES = ("ceiling", "nameko", "kit", "enrollments", "steady")  # in this order, each run
DATABASES = ("kit_src", "kit_sink", "kit_batch_sink", "naive_course", "naive_notification",
             "auth", "course", "notification")
# where each kind of run writes its figures (in OUT); results.md shows every one present
RESULT_FILES = {"sqlite": "results.json", "postgresql": "results-postgresql.json"}

FULL = dict(pika_pub=20000, pika_each=2000, nameko_events=2000, http_rpc=2000,
            kit_relay=10000, kit_e2e=5000, enroll={1: 300, 10: 1000, 50: 1500},
            steady_rate=100, steady_count=1000)
QUICK = dict(pika_pub=2000, pika_each=300, nameko_events=200, http_rpc=200,
             kit_relay=1000, kit_e2e=500, enroll={1: 20, 10: 60, 50: 100},
             steady_rate=100, steady_count=100)

# (key, section, what, unit, target text, check(value) -> bool or None)
ROWS = [
    ("pika.publish.confirm_each", "1. ceiling (pika)", "publish, confirm one by one", "msg/s", "", None),
    ("pika.publish.confirm_pipelined", "1. ceiling (pika)", "publish, confirms pipelined (1000 in flight)", "msg/s", "", None),
    ("pika.publish.unconfirmed", "1. ceiling (pika)", "publish, no confirms", "msg/s", "", None),
    ("pika.consume.prefetch100", "1. ceiling (pika)", "consume, prefetch 100, manual ack", "msg/s", "", None),
    ("nameko.dispatch.sequential", "2. plain nameko", "EventDispatcher, sequential", "events/s", "", None),
    ("nameko.dispatch.greenthreads10", "2. plain nameko", "EventDispatcher, 10 greenthreads", "events/s", "", None),
    ("nameko.handled.e2e", "2. plain nameko", "@event_handler, handled end to end (sequential dispatch)", "events/s", "", None),
    ("nameko.http_rpc.c10", "2. plain nameko", "@http + one RPC, 10 clients", "req/s", "", None),
    ("naive.enroll.c1", "2. plain nameko", "naive enrollment, 1 client", "req/s", "", None),
    ("naive.enroll.c10", "2. plain nameko", "naive enrollment, 10 clients", "req/s", "", None),
    ("naive.enroll.c50", "2. plain nameko", "naive enrollment, 50 clients", "req/s", "", None),
    ("naive.enroll.c10.p99", "2. plain nameko", "naive enrollment p99, 10 clients", "ms", "", None),
    ("kit.relay", "3. our kit", "outbox relay (confirmed, persistent)", "events/s", "", None),
    ("kit.relay.ratio_pika_unconfirmed", "3. our kit", "outbox relay / pika unconfirmed", "ratio", ">= 0.40", lambda v: v >= 0.40),
    ("kit.consumer", "3. our kit", "consumer with DB write + inbox, a transaction per event (event_handler; from backlog)", "events/s", ">= 2000", lambda v: v >= 2000),
    ("kit.e2e", "3. our kit", "end to end: outbox commit to last handled (event_handler)", "events/s", "", None),
    ("kit.lag", "3. our kit", "lag: last publish confirmed to last handled (event_handler)", "ms", "", None),
    ("kit.consumer.batched", "3. our kit", "consumer with DB write + inbox, a transaction per batch (batch_event_handler, max_batch 100; from backlog)", "events/s", ">= 2000", lambda v: v >= 2000),
    ("kit.e2e.batched", "3. our kit", "end to end: outbox commit to last handled (batch_event_handler)", "events/s", "", None),
    ("kit.lag.batched", "3. our kit", "lag: last publish confirmed to last handled (batch_event_handler)", "ms", "", None),
]
for _c in (1, 10, 50):
    ROWS += [
        (f"gateway.enroll.c{_c}", "4. our HTTP path", f"gateway enrollments, {_c} clients", "req/s", "", None),
        (f"gateway.enroll.c{_c}.p50", "4. our HTTP path", f"gateway enroll p50, {_c} clients", "ms", "", None),
        (f"gateway.enroll.c{_c}.p95", "4. our HTTP path", f"gateway enroll p95, {_c} clients", "ms", "", None),
        (f"gateway.enroll.c{_c}.p99", "4. our HTTP path", f"gateway enroll p99, {_c} clients",
         "ms", "< 50" if _c == 10 else "", (lambda v: v < 50) if _c == 10 else None),
        (f"gateway.enroll.c{_c}.ratio_naive", "4. our HTTP path", f"gateway / naive enrollments, {_c} clients",
         "ratio", ">= 1.0", lambda v: v >= 1.0),
    ]
ROWS += [
    ("notify.latency.p50", "4. our HTTP path", "HTTP enroll -> notification stored p50, 100 req/s", "ms", "< 15", lambda v: v < 15),
    ("notify.latency.p99", "4. our HTTP path", "HTTP enroll -> notification stored p99, 100 req/s", "ms", "< 60", lambda v: v < 60),
    ("notify.achieved_rate", "4. our HTTP path", "steady load: achieved request rate", "req/s", "", None),
]
ROW_KEYS = [row[0] for row in ROWS]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def parse_time(text):
    value = dt.datetime.fromisoformat(str(text))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.timestamp()


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


class Bench:
    def __init__(self, args):
        self.args = args
        self.run_name = f"kn_bench_{uuid.uuid4().hex[:10]}"
        self.sizes = dict(QUICK if args.quick else FULL)
        if args.enroll:  # other request counts, for a longer look at one level
            self.sizes["enroll"] = args.enroll
        self.values = {key: [] for key in ROW_KEYS}
        self.tmp = tempfile.mkdtemp(prefix="kn-bench-")
        self.services = []
        self.next_pair = {"gateway": 0, "naive": 0}
        self.next_steady_user = 1_000_000
        self.tokens = {}

    def log(self, message):
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    # -- set up ---------------------------------------------------------------------------

    def db_url(self, name):
        return self.dbs.url(name)

    def naive_db_url(self, name):
        # nameko-sqlalchemy's own engine: plain postgresql:// would mean psycopg2
        return normalize_url(self.db_url(name)).render_as_string(hide_password=False)

    def base_config(self, **extra):
        config = {
            "AMQP_URI": self.vhost.amqp_uri, "HEARTBEAT": 15, "max_workers": 10,
            "PREFETCH_COUNT": 20, "RPC_TIMEOUT": 30, "PUBLISH_CONFIRM_TIMEOUT": 10,
            "EVENT_RETRY_DELAYS": [1, 5, 30],
            "LOGGING": {"version": 1, "disable_existing_loggers": False,
                        "handlers": {"console": {"class": "logging.StreamHandler"}},
                        "root": {"level": "WARNING", "handlers": ["console"]}},
        }
        config.update(extra)
        return config

    def prepare_databases(self):
        from bench import kit_services, plain_services
        from services.kit.migrations import upgrade
        self.dbs.create(*DATABASES, synchronous_commit=self.args.synchronous_commit)
        for name in ("kit_src", "kit_sink", "kit_batch_sink"):
            kit_services.Base.metadata.create_all(self.dbs.engine(name))
        plain_services.NaiveNotifyBase.metadata.create_all(self.dbs.engine("naive_notification"))
        engine = self.dbs.engine("naive_course")
        plain_services.NaiveBase.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(insert(plain_services.NaiveCourse), [
                {"id": i, "title": f"Bench course {i}", "enrollment_count": 0}
                for i in range(1, COURSES + 1)])
        for service in ("auth", "course", "notification"):
            upgrade(service, self.db_url(service))
        from services.course.models import Course
        from services.notification.models import Contact
        from services.notification.models import Course as KnownCourse
        with self.dbs.engine("course").begin() as conn:
            conn.execute(insert(Course), [
                {"id": i, "title": f"Bench course {i}", "description": "bench",
                 "instructor_id": 900_000} for i in range(1, COURSES + 1)])
        users = self.pair_users_needed()
        # the gateway asks auth whether a token's user exists (cached per user for
        # USER_CACHE_SECONDS): the harness's users are real users of auth, as in production
        from services.auth.models import User
        with self.dbs.engine("auth").begin() as conn:
            conn.execute(insert(User), [
                {"id": u, "email": f"u{u}@bench.invalid", "name": f"User {u}", "role": "student",
                 "password_hash": "-"}
                for u in list(range(1, users + 1))
                + list(range(1_000_000, 1_000_000 + self.steady_users_needed()))])
        with self.dbs.engine("notification").begin() as conn:
            conn.execute(insert(Contact), [
                {"user_id": u, "email": f"u{u}@bench.invalid", "name": f"User {u}"}
                for u in list(range(1, users + 1))
                + list(range(1_000_000, 1_000_000 + self.steady_users_needed()))])
            conn.execute(insert(KnownCourse), [
                {"course_id": i, "title": f"Bench course {i}", "instructor_id": 900_000}
                for i in range(1, COURSES + 1)])

    def pair_users_needed(self):
        per_run = sum(self.sizes["enroll"].values())
        return per_run * self.args.runs // COURSES + 10

    def steady_users_needed(self):
        return self.sizes["steady_count"] * self.args.runs + 10

    def start_services(self):
        vh = self.vhost
        ports = {name: free_port() for name in ("plain_src", "plain_sink", "plain_web",
                                                 "kit_src", "gateway")}
        self.urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        subscriptions = {"bench_relay.sink": ["bench.relay_only"],
                         "kit_sink.handle": ["bench.event"],
                         "kit_batch_sink.handle": ["bench.batch_event"]}
        suite = dict(DB_URIS={"auth:Base": self.db_url("auth"),
                              "course:Base": self.db_url("course"),
                              "notification:Base": self.db_url("notification")},
                     SUBSCRIPTIONS="contracts.subscriptions:SUBSCRIPTIONS",
                     JWT_SECRET=JWT_SECRET, MAIL_BACKEND="log", OUTBOX_POLL_INTERVAL=2,
                     OUTBOX_BATCH_SIZE=500, ENVIRONMENT="development")

        def web(name):
            return {"WEB_SERVER_ADDRESS": f"127.0.0.1:{ports[name]}"}

        def consumers(queue):
            return lambda: vh.consumers(queue) > 0

        specs = [
            ("plain_src", "bench.plain_services:PlainSource", web("plain_src"),
             procs.http_ok(self.urls["plain_src"] + "/")),
            ("plain_sink", "bench.plain_services:PlainSink", web("plain_sink"),
             consumers("evt-plain_src-bench.event--plain_sink.handle")),
            ("plain_echo", "bench.plain_services:PlainEcho", {}, consumers("rpc-plain_echo")),
            ("naive_course", "bench.plain_services:NaiveCourseService",
             {"DB_URIS": {"naive_course:NaiveBase": self.naive_db_url("naive_course")}},
             consumers("rpc-naive_course")),
            ("naive_notification", "bench.plain_services:NaiveNotificationService",
             {"DB_URIS": {"naive_notification:NaiveNotifyBase":
                          self.naive_db_url("naive_notification")}},
             consumers("evt-naive_course-course.enrolled--naive_notification."
                       "confirm_enrollment")),
            ("plain_web", "bench.plain_services:PlainWeb", web("plain_web"),
             procs.http_ok(self.urls["plain_web"] + "/")),
            ("kit_src", "bench.kit_services:KitSource",
             dict(web("kit_src"), DB_URIS={"kit_src:Base": self.db_url("kit_src")},
                  EXTRA_SUBSCRIPTIONS=subscriptions, OUTBOX_POLL_INTERVAL=60,
                  OUTBOX_BATCH_SIZE=500, DB_POOL_SIZE=4),  # (max_connections: bench/NOTES.md)
             procs.http_ok(self.urls["kit_src"] + "/")),
            ("kit_sink", "bench.kit_services:KitSink",
             dict(DB_URIS={"kit_sink:Base": self.db_url("kit_sink")},
                  EXTRA_SUBSCRIPTIONS=subscriptions), consumers("kit_sink.handle")),
            ("kit_batch_sink", "bench.kit_services:KitBatchSink",
             dict(DB_URIS={"kit_batch_sink:Base": self.db_url("kit_batch_sink")},
                  EXTRA_SUBSCRIPTIONS=subscriptions, DB_POOL_SIZE=4), consumers("kit_batch_sink.handle")),
            ("auth", "services.auth.service", suite, consumers("rpc-auth")),
            ("course", "services.course.service", suite, consumers("rpc-course")),
            ("notification", "services.notification.service", suite,
             consumers("notification.confirm_enrollment")),
            ("gateway", "gateway.service", dict(suite, **web("gateway")),
             procs.http_ok(self.urls["gateway"] + "/api/openapi.json")),
        ]
        for label, target, extra, ready in specs:
            service = procs.Service(label, [target], self.base_config(**extra), self.tmp, ready)
            if label in self.args.profile:
                os.makedirs(self.args.out or HERE, exist_ok=True)
                service.profile_to = os.path.join(self.args.out or HERE, f"profile-{label}.txt")
            self.services.append(service)
        self.log(f"starting {len(self.services)} nameko processes")
        for service in self.services:
            service.start(ROOT)
        deadline = time.monotonic() + 120
        for service in self.services:
            service.wait_ready(deadline)
        # Every service declares analytics' queue (bound to "#"); analytics does not run here, so
        # it would keep a second persistent copy of every event our side publishes, which
        # pika's side (one queue) does not pay for. The same routing for both: one queue.
        self.vhost.delete_queue(ANALYTICS_QUEUE)
        self.log(f"all services ready; {ANALYTICS_QUEUE} deleted (analytics does not run here)")

    # -- helpers --------------------------------------------------------------------------

    def token(self, user_id):
        if user_id not in self.tokens:
            now = int(time.time())
            self.tokens[user_id] = jwt.encode(
                {"sub": str(user_id), "role": "student", "iat": now, "exp": now + 7200},
                JWT_SECRET, algorithm="HS256")
        return self.tokens[user_id]

    def pair(self, which):
        index = self.next_pair[which]
        self.next_pair[which] += 1
        return index // COURSES + 1, index % COURSES + 1  # (user, course)

    def notifications(self):
        return self.dbs.scalar("notification", "SELECT COUNT(*) FROM notifications")

    def naive_notifications(self):
        return self.dbs.scalar("naive_notification", "SELECT COUNT(*) FROM notifications")

    def wait_notifications(self, expected, timeout=120):
        wait_for(lambda: self.notifications() >= expected, timeout,
                 f"{expected} notifications stored")

    def record(self, key, value):
        self.values[key].append(value)

    def last(self, key):
        return self.values[key][-1]

    # -- 1. ceiling ---------------------------------------------------------------------

    def run_ceiling(self):
        n, each = self.sizes["pika_pub"], self.sizes["pika_each"]
        client = ceiling.Pika(self.vhost.amqp_uri)
        try:
            with self.meter.phase("pika publish/consume"):
                self.record("pika.publish.confirm_each", client.publish_confirmed_each(each))
                self.record("pika.publish.confirm_pipelined", client.publish_confirmed_pipelined(n))
                self.record("pika.publish.unconfirmed", client.publish_unconfirmed(n))
                self.record("pika.consume.prefetch100", client.consume(n))
            client.fresh_channel().close()  # purge
        finally:
            client.close()
        self.log("  pika: unconfirmed %.0f/s, pipelined %.0f/s, one by one %.0f/s, consume %.0f/s"
                 % (self.last("pika.publish.unconfirmed"), self.last("pika.publish.confirm_pipelined"),
                    self.last("pika.publish.confirm_each"), self.last("pika.consume.prefetch100")))

    # -- 2. plain nameko ------------------------------------------------------------------

    def nameko_dispatch(self, concurrency):
        n = self.sizes["nameko_events"]
        requests.post(self.urls["plain_sink"] + "/reset", timeout=10).raise_for_status()
        started = time.time()
        answer = requests.post(f"{self.urls['plain_src']}/dispatch/{n}/{concurrency}",
                               timeout=300).json()
        stats = wait_for(lambda: (lambda s: s if s["count"] >= n else None)(
            requests.get(self.urls["plain_sink"] + "/stats", timeout=10).json()), 120,
            "plain nameko events handled")
        return n / answer["seconds"], n / (stats["last"] - started)

    def run_nameko(self):
        with self.meter.phase("nameko dispatch + handle"):
            seq, e2e = self.nameko_dispatch(1)
            self.record("nameko.dispatch.sequential", seq)
            self.record("nameko.handled.e2e", e2e)
            green, _ = self.nameko_dispatch(10)
            self.record("nameko.dispatch.greenthreads10", green)
        n = self.sizes["http_rpc"]
        with self.meter.phase("nameko @http + RPC"):
            ok, errors, seconds, _ = closed_loop(self.urls["plain_web"], 10, n // 10,
                                                 lambda c, i: ("GET", "/rpc", {}))
        self.record("nameko.http_rpc.c10", ok / seconds)
        self.log("  nameko: dispatch %.0f/s sequential, %.0f/s 10 greenthreads, handled %.0f/s, "
                 "@http+RPC %.0f req/s" % (seq, green, e2e, ok / seconds))

    # -- 3. kit ---------------------------------------------------------------------------

    def kit_db(self, name, sql):
        return self.dbs.query(name, sql)

    def kit_dispatch(self, event_type, n):
        before = self.kit_db("kit_src", "SELECT COALESCE(MAX(id), 0) FROM outbox_events")[0][0]
        answer = requests.post(f"{self.urls['kit_src']}/dispatch/{event_type}/{n}/{n}",
                               timeout=300).json()
        wait_for(lambda: self.kit_db("kit_src", "SELECT COUNT(*) FROM outbox_events "
                                     f"WHERE id > {before} AND sent_at IS NULL")[0][0] == 0,
                 120, "outbox relayed")
        last_sent = self.kit_db("kit_src", "SELECT MAX(sent_at) FROM outbox_events "
                                f"WHERE id > {before}")[0][0]
        return answer, parse_time(last_sent)

    def run_kit(self):
        n = self.sizes["kit_relay"]
        with self.meter.phase("kit outbox relay (no consumer)"):
            answer, last_sent = self.kit_dispatch("bench.relay_only", n)
        relay = n / (last_sent - answer["committed"])
        self.vhost.purge("bench_relay.sink")
        self.record("kit.relay", relay)
        if self.values["pika.publish.unconfirmed"]:  # measured in this run (not with --only kit)
            self.record("kit.relay.ratio_pika_unconfirmed",
                        relay / self.last("pika.publish.unconfirmed"))
        self.log("  kit: relay %.0f/s" % relay)
        self.kit_end_to_end("bench.event", "kit_sink", "")
        self.kit_end_to_end("bench.batch_event", "kit_batch_sink", ".batched")

    def kit_end_to_end(self, event_type, sink, suffix):
        n = self.sizes["kit_e2e"]
        before = self.kit_db(sink, "SELECT COUNT(*) FROM received")[0][0]
        with self.meter.phase(f"kit relay + {sink} (end to end)"):
            answer, last_sent = self.kit_dispatch(event_type, n)
            wait_for(lambda: self.kit_db(sink, "SELECT COUNT(*) FROM received")[0][0]
                     >= before + n, 300, f"{sink}: events handled")
        times = sorted(parse_time(row[0]) for row in self.kit_db(
            sink, "SELECT processed_at FROM inbox_records"))[before:]
        first, last = min(times), max(times)
        # events handled after the first commit, over the time since: a batch's records share
        # one timestamp, so the first batch counts as the start, not as work done
        after_first = sum(1 for t in times if t > first)
        self.record("kit.consumer" + suffix, after_first / (last - first))
        self.record("kit.e2e" + suffix, n / (last - answer["committed"]))
        self.record("kit.lag" + suffix, 1000.0 * (last - last_sent))
        self.log("  %s: consumer %.0f/s, end to end %.0f/s, lag %.0f ms"
                 % (sink, self.last("kit.consumer" + suffix), self.last("kit.e2e" + suffix),
                    self.last("kit.lag" + suffix)))

    # -- 2+4. enrollments -----------------------------------------------------------------

    def enroll_gateway(self, client, index):
        user, course = self.pair("gateway")
        return "POST", f"/api/courses/{course}/enroll", {"Authorization": f"Bearer {self.token(user)}"}

    def enroll_naive(self, client, index):
        user, course = self.pair("naive")
        return "POST", f"/api/courses/{course}/enroll/{user}", {}

    # Each level's requests as four blocks in the order naive, ours, ours, naive: a drift of the
    # machine during the level (a checkpoint, autovacuum, the load of another process) falls on
    # both sides alike, where one block each let it fall on whichever side ran second.
    ENROLL_ORDER = ("naive", "gateway", "gateway", "naive")

    def run_enrollments(self):
        for clients, total in self.sizes["enroll"].items():
            # pre-mint the tokens this level will use (not timed)
            for offset in range(total + clients):
                self.token((self.next_pair["gateway"] + offset) // COURSES + 1)
            per_client = max(1, total // clients // 2)  # each side: two blocks
            done = {side: [0, 0, 0.0, []] for side in ("naive", "gateway")}  # ok, errors, s, ms
            for side in self.ENROLL_ORDER:
                url, make = ((self.urls["plain_web"], self.enroll_naive) if side == "naive"
                             else (self.urls["gateway"], self.enroll_gateway))
                with self.meter.phase(f"{side} enrollment, {clients} clients"):
                    ok, errors, seconds, lat = closed_loop(url, clients, per_client, make)
                for index, value in enumerate((ok, errors, seconds, lat)):
                    done[side][index] += value
                # a block's notifications are stored before the next block starts
                if side == "naive":
                    wait_for(lambda: self.naive_notifications() >= self.next_pair["naive"], 120,
                             "naive notifications stored")
                else:
                    self.wait_notifications(self.next_pair["gateway"] + self.steady_done())
            naive = done["naive"][0] / done["naive"][2]
            self.record(f"naive.enroll.c{clients}", naive)
            if clients == 10:
                self.record("naive.enroll.c10.p99", percentile(done["naive"][3], 99))
            ok, errors, seconds, lat = done["gateway"]
            rate = ok / seconds
            self.record(f"gateway.enroll.c{clients}", rate)
            for pct in (50, 95, 99):
                self.record(f"gateway.enroll.c{clients}.p{pct}", percentile(lat, pct))
            self.record(f"gateway.enroll.c{clients}.ratio_naive", rate / naive)
            for side in ("naive", "gateway"):
                if done[side][1]:
                    self.log(f"  {side} enrollment: {done[side][1]} non-201 answers")
            self.log("  %2d clients: gateway %.0f req/s (p50 %.1f, p99 %.1f ms), naive %.0f req/s, "
                     "ratio %.2f" % (clients, rate, percentile(lat, 50), percentile(lat, 99),
                                     naive, rate / naive))

    def steady_done(self):
        return self.next_steady_user - 1_000_000

    def run_steady(self):
        count, rate = self.sizes["steady_count"], self.sizes["steady_rate"]
        first_user = self.next_steady_user
        self.next_steady_user += count
        for user in range(first_user, first_user + count):
            self.token(user)

        def make(_client, index):
            return ("POST", "/api/courses/1/enroll",
                    {"Authorization": f"Bearer {self.token(first_user + index)}"})

        before = self.notifications()
        with self.meter.phase("gateway steady 100 req/s"):
            results = open_loop(self.urls["gateway"], rate, count, make)
            self.wait_notifications(before + sum(1 for r in results if r[2] == 201))
        sent = {first_user + index: when for index, when, status in results if status == 201}
        rows = self.dbs.query(
            "notification", "SELECT user_id, created_at FROM notifications "
            "WHERE user_id >= :first AND user_id < :end", first=first_user, end=first_user + count)
        latencies = [1000.0 * (parse_time(created) - sent[user]) for user, created in rows
                     if user in sent]
        span = max(r[1] for r in results) - min(r[1] for r in results)
        self.record("notify.latency.p50", percentile(latencies, 50))
        self.record("notify.latency.p99", percentile(latencies, 99))
        self.record("notify.achieved_rate", (len(results) - 1) / span if span > 0 else 0)
        self.log("  steady %d req/s: enroll -> notification p50 %.1f ms, p99 %.1f ms (%d of %d)"
                 % (rate, percentile(latencies, 50), percentile(latencies, 99), len(latencies), count))

    # -- run ------------------------------------------------------------------------------

    def run(self):
        started = time.time()
        name = self.run_name
        self.dbs = Databases(self.args.db, name, self.tmp)
        with procs.Vhost(name) as self.vhost:
            where = self.tmp if self.args.db == "sqlite" else f"PostgreSQL databases {name}_*"
            self.log(f"vhost {name}, databases: {where}; {'quick' if self.args.quick else 'full'} "
                     f"mode, {self.args.runs} runs")
            try:
                self.prepare_databases()
                self.start_services()
                self.meter = procs.Meter(self.services)
                self.meter.start()
                for run in range(1, self.args.runs + 1):
                    self.log(f"run {run}/{self.args.runs}")
                    for phase in PHASES:
                        if phase in self.args.only:
                            getattr(self, f"run_{phase}")()
                self.meter.stop()
            finally:
                self.log("stopping the services")
                for service in self.services:  # all at once: each may take seconds to stop
                    service.terminate()
                for service in self.services:
                    service.stop()
                self.dbs.drop_all()
        self.elapsed = time.time() - started
        shutil.rmtree(self.tmp, ignore_errors=True)  # kept when the run failed: its logs say why
        return self.report()

    # -- report ---------------------------------------------------------------------------

    def machine(self):
        return machine(self.args.db)

    def report(self):
        rows = []
        for key, section, what, unit, target, check in ROWS:
            runs = self.values[key]
            median = statistics.median(runs) if runs else None
            met = None if (check is None or median is None) else bool(check(median))
            rows.append({"key": key, "section": section, "what": what, "unit": unit,
                         "median": median, "runs": runs, "target": target, "met": met})
        processes = {s.label: {"peak_rss_mb": round(s.peak_rss / 2 ** 20, 1)} for s in self.services}
        phases = {phase: {label: round(statistics.median(v), 1) for label, v in by.items()}
                  for phase, by in self.meter.phases.items()}
        result = {"mode": "quick" if self.args.quick else "full", "runs": self.args.runs,
                  "database": self.args.db,
                  "synchronous_commit": self.args.synchronous_commit or "server default",
                  "seconds": round(self.elapsed, 1), "machine": self.machine(), "rows": rows,
                  "processes": processes, "cpu_percent_by_phase": phases,
                  "sizes": {k: v for k, v in self.sizes.items()}}
        return result


def postgres_version():
    from bench.dbs import admin_connection
    try:
        conn = admin_connection()
        try:
            return conn.run("SHOW server_version")[0][0]
        finally:
            conn.close()
    except Exception:  # noqa: BLE001
        return "unknown"


def machine(database="sqlite"):
    def version(package):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"
    info = {
        "cores": psutil.cpu_count(logical=True),
        "memory_gb": round(psutil.virtual_memory().total / 2 ** 30, 1),
        "python": platform.python_version(), "platform": platform.platform(),
        "nameko": version("nameko"), "kombu": version("kombu"),
        "eventlet": version("eventlet"), "pika": version("pika"),
        "sqlalchemy": version("sqlalchemy"), "rabbitmq": procs.broker_version(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    if database == "postgresql":
        info["postgresql"] = postgres_version()
        info["pg8000"] = version("pg8000")
    return info


def fmt(value, unit):
    if value is None:
        return "—"
    if unit == "ratio":
        return f"{value:.2f}×"
    if unit == "ms":
        return f"{value:.1f}"
    if unit == "MB":
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def run_header(result, command):
    m = result["machine"]
    db = ""
    if m.get("postgresql"):
        db = f", PostgreSQL {m['postgresql']} (pg8000 {m.get('pg8000')})"
    return (f"`{command}` ({result['mode']} mode, {result['runs']} runs, {result['seconds']} s), "
            f"{m['date']}. Machine: {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}, "
            f"nameko {m['nameko']}, kombu {m['kombu']}, eventlet {m['eventlet']}, "
            f"SQLAlchemy {m['sqlalchemy']}, RabbitMQ {m['rabbitmq']}{db}; load average at the "
            f"start {m.get('load_average_at_start', '?')}, at the end {m['load_average_at_end']}.")


SECTION_TITLES = {"sqlite": ("SQLite", "make bench"),
                  "postgresql": ("PostgreSQL", "make bench BENCH_DB=postgresql")}


def markdown_section(result):
    """One database's run of ``make bench``: its table, memory and CPU."""
    database = result.get("database", "sqlite")
    title, command = SECTION_TITLES[database]
    if result.get("synchronous_commit") == "off":
        title, command = (f"{title} with synchronous_commit = off (a comparison, not a setting)",
                          f"{command} BENCH_ARGS=--synchronous-commit=off")
    where = ("SQLite (WAL) in a temp dir" if database == "sqlite" else
             "throwaway PostgreSQL databases on the local server (dropped after)")
    lines = [f"## `make bench` on {title}", "", run_header(result, command), "",
             "Every figure is the median of the runs (each run's value in the JSON); every ratio is "
             f"computed within one run, then its median taken. Databases: {where}; broker: the "
             "local RabbitMQ, a throwaway vhost.", "",
             "| section | measure | median | unit | target | met |", "|---|---|---:|---|---|---|"]
    for row in result["rows"]:
        met = {None: "", True: "yes", False: "**no**"}[row["met"]]
        lines.append(f"| {row['section']} | {row['what']} | {fmt(row['median'], row['unit'])} | "
                     f"{row['unit']} | {row['target']} | {met} |")
    lines += ["", f"### {title}: peak memory", "", "| process | peak RSS (MB) |", "|---|---:|"]
    for label, info in result["processes"].items():
        lines.append(f"| {label} | {info['peak_rss_mb']} |")
    lines += ["", f"### {title}: CPU per phase (% of one core, median over runs; processes above "
              "1%)", "", "| phase | CPU by process |", "|---|---|"]
    for phase, by in result["cpu_percent_by_phase"].items():
        busy = ", ".join(f"{label} {value:.0f}%" for label, value in
                         sorted(by.items(), key=lambda kv: -kv[1]) if value >= 1)
        lines.append(f"| {phase} | {busy} |")
    return "\n".join(lines) + "\n"


def check_complete(result):
    """Every row measured with a positive number (used by the quick test)."""
    missing = [row["key"] for row in result["rows"]
               if not row["runs"] or row["median"] is None or not row["median"] > 0]
    return missing


def main(argv=None):
    from bench import report
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: under a minute")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (at least 3)")
    parser.add_argument("--db", choices=sorted(RESULT_FILES),
                        default=os.environ.get("BENCH_DB") or "sqlite",
                        help="the services' databases (default BENCH_DB, else sqlite)")
    parser.add_argument("--synchronous-commit", choices=("on", "off"),
                        help="PostgreSQL only: set on the run's databases (the server's own "
                             "setting otherwise; bench/NOTES.md says what off trades away); its "
                             "figures go to results-postgresql-sync-off.json")
    parser.add_argument("--out", help="where results.md and the JSON go (default bench/)")
    parser.add_argument("--notes", default=os.path.join(HERE, "NOTES.md"),
                        help="markdown put under the header of results.md (if it exists)")
    parser.add_argument("--profile", action="append", default=[], metavar="SERVICE",
                        help="run SERVICE (e.g. kit_sink, course, gateway) under pyinstrument "
                             "(cProfile with BENCH_CPROFILE=1); its profile goes to "
                             "OUT/profile-SERVICE.txt")
    parser.add_argument("--only", default=",".join(PHASES), metavar="PHASE,...",
                        help="run only these phases (of %s); a partial run is printed, not "
                             "written, unless --out is given" % ", ".join(PHASES))
    parser.add_argument("--enroll", metavar="CLIENTS=N,...",
                        help="the enrollment levels and requests per side instead (e.g. 1=3000: "
                             "one client, 3,000 requests each side); a run with it is partial")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite OUT/results.md from the JSON files there (and the notes)")
    args = parser.parse_args(argv)
    args.runs = max(3, args.runs)
    args.only = [phase.strip() for phase in args.only.split(",") if phase.strip()]
    unknown = set(args.only) - set(PHASES)
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(sorted(unknown))}; phases: {', '.join(PHASES)}")
    try:
        args.enroll = {int(clients): int(total) for clients, total in (
            level.split("=") for level in args.enroll.split(","))} if args.enroll else None
    except ValueError:
        parser.error("--enroll: CLIENTS=N,... (e.g. 1=3000,10=5000)")
    partial = set(args.only) != set(PHASES) or args.enroll is not None
    if args.out is None and (args.render or not partial):
        args.out = HERE
    if args.render:
        print(report.write(args.out, args.notes))
        return 0
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    result = Bench(args).run()
    result["machine"]["load_average_at_start"] = load_at_start
    if args.out is not None:
        filename = RESULT_FILES[args.db]
        if args.synchronous_commit == "off":
            filename = filename.replace(".json", "-sync-off.json")
        report.save(args.out, filename, result, args.notes)
    print(markdown_section(result))
    if partial:
        return 0
    missing = check_complete(result)
    if missing:
        print("rows without a positive figure: " + ", ".join(missing), file=sys.stderr)
        return 1
    return 0
