"""``python -m bench.scale [--quick]``: the suite's cost with production-sized tables, side by side
with near-empty ones, in the same run, on PostgreSQL.

Two copies of the suite run at once (course, review, notification, analytics and a gateway each,
in their own vhost and ``kn_bench_*`` databases): "small" on near-empty tables, "large" on tables
bulk-loaded in SQL (``INSERT ... SELECT FROM generate_series``, not through the API): 100k users,
10k courses, 1M enrollments with their sent outbox rows, 1M notifications with their inbox records,
1M analytics events with theirs, 100k reviews. Each round measures every figure on small, then
on large; each ratio (large / small) is computed within a round, and every figure is the median
of the rounds. Then, on small only, the bounded-growth phase (``growth``): steady enrollments with
the retention sweep on, the kit's tables' rows and bytes after each step.

Writes OUT/results-scale.json and re-renders OUT/results.md (bench/report.py).
"""
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid

import jwt
import pika

from bench import procs
from bench.ceiling import parameters
from bench.dbs import Databases
from bench.harness import ROOT, free_port, machine, parse_time, run_header, wait_for
from bench.load import closed_loop, open_loop, percentile

JWT_SECRET = "bench-only-secret-0123456789-0123456789-abcdefgh"
# auth runs too: the gateway asks it whether a token's user exists (cached per user)
SERVICES = ("auth", "course", "review", "notification", "analytics")
DATABASES = SERVICES
REPLAY_QUEUE = "bench.replay_sink"
NEW_USERS = 10_000_000  # users who enroll during the benchmark: ids above every loaded one
NEW_CONTACTS = 20_000
ADMIN_ID = NEW_USERS + NEW_CONTACTS + 1  # reads the event log (the gateway checks the role)

FULL = dict(large=dict(users=100_000, courses=10_000, enrollments=1_000_000, events=1_000_000,
                       reviews=100_000),
            # the same density per user, per course and per minute of the event log as large
            # (10 enrollments and notifications per user, 100 enrollments and 10 reviews per
            # course, ~116 events a minute), and enough events to fill the summary's last
            # SUMMARY_MINUTES (60) at that density: its events_per_minute list is then as long
            # on both sides (with 1,000 events small's log spanned 9 minutes, and the summary's
            # "ratio" compared a 36-entry answer with a 240-entry one)
            small=dict(users=700, courses=70, enrollments=7000, events=7000, reviews=700),
            requests={1: 150, 10: 300}, relay=5000, replay=100_000, growth_steps=5,
            growth_rate=50, growth_seconds=12)
QUICK = dict(large=dict(users=2000, courses=200, enrollments=20_000, events=20_000, reviews=2000),
             small=dict(users=50, courses=40, enrollments=500, events=500, reviews=400),
             requests={1: 10, 10: 20}, relay=500, replay=2000, growth_steps=3,
             growth_rate=30, growth_seconds=3)
HISTORY = dt.timedelta(days=6)  # the loaded rows' ages: within the default retentions


def event_span(sizes, side):
    """Seconds the side's event log spans: large's spans HISTORY, small's as many events per
    minute (so "since an hour ago" and the summary's last hour find as much on both)."""
    return HISTORY.total_seconds() * sizes[side]["events"] / sizes["large"]["events"]

# (key, what); each measured at 1 and 10 clients (p50, p99, req/s)
REQUESTS = [
    # the floor of every other row: HTTP and the gateway, no RPC, no database
    ("live", "GET /health/live (the gateway alone: no RPC, no database)"),
    ("courses.first", "GET /api/courses (first page)"),
    ("courses.deep", "GET /api/courses?page=LAST (the deepest page, by OFFSET)"),
    ("courses.after", "GET /api/courses?after=(the page before LAST's next: the same page, by key)"),
    ("course", "GET /api/courses/{id}"),
    ("reviews", "GET /api/courses/{id}/reviews"),
    ("notifications", "GET /api/users/me/notifications (a random user: the gateway's user cache "
                      "misses, so also auth's get_user)"),
    ("notifications.again", "GET /api/users/me/notifications (one user again: the cache hits)"),
    ("events", "GET /api/events"),
    ("events.type", "GET /api/events?type=course.enrolled"),
    ("events.user", "GET /api/events?user_id=N"),
    ("events.course", "GET /api/events?course_id=N"),
    ("events.since", "GET /api/events?since=(an hour ago)"),
    ("events.until", "GET /api/events?until=(the middle of the log)"),
    ("events.after", "GET /api/events?after=(a cursor in the middle of the log)"),
    ("summary", "GET /api/analytics/summary"),
    ("enroll", "POST /api/courses/{id}/enroll"),
]
READS = [key for key, _ in REQUESTS if key != "enroll"]
PIPELINE = [
    ("relay", "outbox relay, events/s (course; a backlog of new rows)", "events/s"),
    ("consumer.notification", "consumer notification.confirm_enrollment, events/s", "events/s"),
    ("consumer.analytics", "consumer analytics.record_event, events/s", "events/s"),
    ("replay", "knowledge-nest replay (to one queue), events/s", "events/s"),
]


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def token(user_id, role="student"):
    now = int(time.time())
    return jwt.encode({"sub": str(user_id), "role": role, "iat": now, "exp": now + 7200},
                      JWT_SECRET, algorithm="HS256")


# -- bulk load: SQL on the server, no rows through Python -------------------------------------

def load_sql(n, events_span):
    """The statements that fill one side's databases (``n``: its sizes), by database."""
    users, courses, enrollments = n["users"], n["courses"], n["enrollments"]
    events, reviews = n["events"], n["reviews"]
    span = HISTORY.total_seconds()
    # enrollment i: user i % users, course (user + 997 * (i / users)) % courses: unique pairs
    pair = (f"(i % {users}) + 1 AS user_id, "
            f"((i % {users}) + 997 * (i / {users})) % {courses} + 1 AS course_id")
    age = f"now() - make_interval(secs => {span} * (1 - i::float8 / {enrollments}))"
    return {
        "auth": [
            f"INSERT INTO users (id, email, password_hash, name, role, created_at) "
            f"SELECT i, 'user' || i || '@bench.invalid', 'not-a-hash', 'User ' || i, 'student', "
            f"now() - make_interval(secs => {span} * (1 - i::float8 / {users})) "
            f"FROM generate_series(1, {users}) i",
            "SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users))",
            # the users who enroll during the benchmark
            f"INSERT INTO users (id, email, password_hash, name, role, created_at) "
            f"SELECT i, 'new' || i || '@bench.invalid', 'not-a-hash', 'New user ' || i, "
            f"'student', now() FROM generate_series({NEW_USERS + 1}, {NEW_USERS + NEW_CONTACTS}) i",
            f"INSERT INTO users (id, email, password_hash, name, role, created_at) VALUES "
            f"({ADMIN_ID}, 'admin@bench.invalid', 'not-a-hash', 'Admin', 'admin', now())",
        ],
        "course": [
            f"INSERT INTO courses (id, title, description, instructor_id, created_at, "
            f"rating_count, rating_sum, enrollment_count) "
            f"SELECT i, 'Course ' || i, 'A benchmark course, number ' || i, 1 + i % 500, "
            f"now() - make_interval(secs => {span}), 0, 0, 0 FROM generate_series(1, {courses}) i",
            "SELECT setval(pg_get_serial_sequence('courses', 'id'), (SELECT max(id) FROM courses))",
            f"INSERT INTO enrollments (id, user_id, course_id, enrolled_at) "
            f"SELECT i + 1, {pair}, {age} FROM generate_series(0, {enrollments - 1}) i",
            "SELECT setval(pg_get_serial_sequence('enrollments', 'id'), "
            "(SELECT max(id) FROM enrollments))",
            "UPDATE courses SET enrollment_count = c.n FROM (SELECT course_id, count(*) AS n "
            "FROM enrollments GROUP BY course_id) c WHERE c.course_id = courses.id",
            # every enrollment's course.enrolled, sent
            "INSERT INTO outbox_events (id, event_id, event_type, body, headers, created_at, "
            "sent_at) SELECT e.id, 'bench-enrolled-' || e.id, 'course.enrolled', "
            "json_build_object('event_id', 'bench-enrolled-' || e.id, 'event_type', "
            "'course.enrolled', 'timestamp', e.enrolled_at, 'source', 'course', 'version', 1, "
            "'data', json_build_object('enrollment_id', e.id, 'user_id', e.user_id, "
            "'course_id', e.course_id, 'course_title', 'Course ' || e.course_id))::text, '{}', "
            "e.enrolled_at, e.enrolled_at + interval '10 milliseconds' FROM enrollments e",
            "SELECT setval(pg_get_serial_sequence('outbox_events', 'id'), "
            "(SELECT max(id) FROM outbox_events))",
        ],
        "review": [
            f"INSERT INTO reviews (id, user_id, course_id, rating, comment, created_at) "
            f"SELECT i + 1, {pair}, 1 + i % 5, 'Review ' || i, {age} "
            f"FROM generate_series(0, {reviews - 1}) i",
            "SELECT setval(pg_get_serial_sequence('reviews', 'id'), (SELECT max(id) FROM reviews))",
        ],
        "notification": [
            f"INSERT INTO contacts (user_id, email, name, updated_at) SELECT i, "
            f"'user' || i || '@bench.invalid', 'User ' || i, now() "
            f"FROM generate_series(1, {users}) i",
            # the users who enroll during the benchmark (else notification would ask auth)
            f"INSERT INTO contacts (user_id, email, name, updated_at) SELECT i, "
            f"'new' || i || '@bench.invalid', 'New user ' || i, now() "
            f"FROM generate_series({NEW_USERS + 1}, {NEW_USERS + NEW_CONTACTS}) i",
            f"INSERT INTO courses (course_id, title, instructor_id, updated_at) "
            f"SELECT i, 'Course ' || i, 1 + i % 500, now() FROM generate_series(1, {courses}) i",
            f"INSERT INTO notifications (id, user_id, email, kind, subject, body, event_id, status, "
            f"attempts, created_at, sent_at) SELECT i + 1, p.user_id, "
            f"'user' || p.user_id || '@bench.invalid', 'enrollment_confirmed', "
            f"'You are enrolled in Course ' || p.course_id, 'Welcome to Course ' || p.course_id, "
            f"'bench-enrolled-' || (i + 1), 'sent', 1, {age}, {age} "
            f"FROM (SELECT i, {pair} FROM generate_series(0, {enrollments - 1}) i) p",
            "SELECT setval(pg_get_serial_sequence('notifications', 'id'), "
            "(SELECT max(id) FROM notifications))",
            f"INSERT INTO inbox_records (consumer, event_id, event_type, processed_at) "
            f"SELECT 'notification.confirm_enrollment', 'bench-enrolled-' || (i + 1), "
            f"'course.enrolled', {age} FROM generate_series(0, {enrollments - 1}) i",
        ],
        "analytics": [
            # a mix: 80% enrollments, 10% registrations, 9% reviews, 1% new courses
            f"INSERT INTO event_log (id, event_id, event_type, routing_key, source, version, "
            f"timestamp, received_at, data, user_id, course_id) "
            f"SELECT i + 1, 'bench-event-' || (i + 1), t.event_type, t.event_type, 'bench', 1, "
            f"now() - make_interval(secs => {events_span} * (1 - i::float8 / {events})), "
            f"now() - make_interval(secs => {events_span} * (1 - i::float8 / {events})), "
            f"json_build_object('user_id', (i % {users}) + 1, 'course_id', (i % {courses}) + 1), "
            f"(i % {users}) + 1, (i % {courses}) + 1 FROM generate_series(0, {events - 1}) i, "
            f"LATERAL (SELECT CASE WHEN i % 100 < 80 THEN 'course.enrolled' "
            f"WHEN i % 100 < 90 THEN 'user.registered' WHEN i % 100 < 99 THEN 'review.created' "
            f"ELSE 'course.created' END AS event_type) t",
            "SELECT setval(pg_get_serial_sequence('event_log', 'id'), (SELECT max(id) FROM event_log))",
            "INSERT INTO inbox_records (consumer, event_id, event_type, processed_at) "
            "SELECT 'analytics.record_event', event_id, event_type, received_at FROM event_log",
            "INSERT INTO event_type_counts (event_type, count) SELECT event_type, count(*) "
            "FROM event_log GROUP BY event_type",
            "INSERT INTO enrollments_per_course (course_id, course_title, count) "
            "SELECT course_id, 'Course ' || course_id, count(*) FROM event_log "
            "WHERE event_type = 'course.enrolled' GROUP BY course_id",
            "INSERT INTO registrations_per_day (day, count) SELECT timestamp::date, count(*) "
            "FROM event_log WHERE event_type = 'user.registered' GROUP BY 1",
            "INSERT INTO rating_counts (rating, count) SELECT r, 0 FROM generate_series(1, 5) r",
            "INSERT INTO events_per_minute (minute, event_type, count) "
            "SELECT date_trunc('minute', timestamp), event_type, count(*) FROM event_log "
            "GROUP BY 1, 2",
        ],
    }


class Side:
    """One copy of the suite: its vhost, databases, services and gateway."""

    def __init__(self, label, sizes, run_name, tmp, settings, events_span):
        self.label, self.n, self.tmp = label, sizes, os.path.join(tmp, label)
        self.events_span = events_span
        os.makedirs(self.tmp, exist_ok=True)
        self.name = f"{run_name}_{label[0]}"
        self.dbs = Databases("postgresql", self.name, self.tmp)
        self.vhost = procs.Vhost(self.name)
        self.settings = settings
        self.services = []
        self.next_user = NEW_USERS

    def prepare(self):
        from services.kit.migrations import upgrade
        self.dbs.create(*DATABASES)
        for service in DATABASES:
            upgrade(service, self.dbs.url(service))
        started = time.monotonic()
        conn = None
        for database, statements in load_sql(self.n, self.events_span).items():
            conn = self._connect(database)
            try:
                for statement in statements:
                    conn.run(statement)
                conn.run("VACUUM ANALYZE")  # as autovacuum would have, on tables this old
            finally:
                conn.close()
        self.load_seconds = time.monotonic() - started
        self.rows = {db: self._row_counts(db) for db in DATABASES}
        log(f"  {self.label}: loaded in {self.load_seconds:.0f} s: "
            + ", ".join(f"{db} {sum(r.values()):,} rows" for db, r in self.rows.items()))

    def _connect(self, database):
        import pg8000.native
        url = self.dbs.url(database)
        from urllib.parse import urlparse
        parsed = urlparse(url)
        return pg8000.native.Connection(user=parsed.username or "postgres",
                                        password=parsed.password, host=parsed.hostname,
                                        port=parsed.port or 5432, database=parsed.path[1:])

    def _row_counts(self, database):
        tables = [row[0] for row in self.dbs.query(
            database, "SELECT relname FROM pg_stat_user_tables WHERE relname <> 'alembic_version'")]
        return {t: self.dbs.scalar(database, f'SELECT count(*) FROM "{t}"') for t in tables}

    def config(self, **extra):
        config = {
            "AMQP_URI": self.vhost.amqp_uri, "HEARTBEAT": 15,
            "PREFETCH_COUNT": 20, "RPC_TIMEOUT": 30, "PUBLISH_CONFIRM_TIMEOUT": 10,
            "EVENT_RETRY_DELAYS": [1, 5, 30], "JWT_SECRET": JWT_SECRET, "MAIL_BACKEND": "log",
            "ENVIRONMENT": "development", "OUTBOX_POLL_INTERVAL": 1,
            # batches of 100: the relay's rate over several batches (each a read of the unsent
            # rows and an update), whatever the backlog's size
            "OUTBOX_BATCH_SIZE": 100,
            "DB_URIS": {f"{s}:Base": self.dbs.url(s) for s in SERVICES},
            # two suites of five services at once on a server with max_connections 100: 4 workers
            # each (plenty for 2 cores), so the default pool (workers + 3 = 7) covers them all
            # and no request opens a connection of its own
            "max_workers": 4,
            "LOGGING": {"version": 1, "disable_existing_loggers": False,
                        "handlers": {"console": {"class": "logging.StreamHandler"}},
                        "root": {"level": "WARNING", "handlers": ["console"]}},
        }
        config.update(self.settings)
        config.update(extra)
        return config

    def start(self):
        self.vhost.__enter__()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"

        def consumers(queue):
            return lambda: self.vhost.consumers(queue) > 0
        specs = [(s, f"services.{s}.service", {}, consumers(f"rpc-{s}")) for s in SERVICES]
        specs.append(("gateway", "gateway.service", {"WEB_SERVER_ADDRESS": f"127.0.0.1:{port}"},
                      procs.http_ok(self.url + "/api/openapi.json")))
        for label, target, extra, ready in specs:
            self.services.append(procs.Service(f"{self.label}_{label}", [target],
                                               self.config(**extra), self.tmp, ready))
        for service in self.services:
            service.start(ROOT)
        deadline = time.monotonic() + 120
        for service in self.services:
            service.wait_ready(deadline)
        channel = pika.BlockingConnection(parameters(self.vhost.amqp_uri)).channel()
        channel.queue_declare(REPLAY_QUEUE, durable=True)
        channel.connection.close()

    def stop(self):
        for service in self.services:
            service.terminate()
        for service in self.services:
            service.stop()
        self.vhost.__exit__(None, None, None)
        self.dbs.drop_all()

    # -- what the requests ask for ------------------------------------------------------------

    def next_cursor(self, path, headers):
        request = urllib.request.Request(self.url + path, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            cursor = json.load(response)["next"]
        if cursor is None:
            raise RuntimeError(f"{self.label}: {path} has no next page")
        return cursor

    def request_maker(self, key, rounds_seed):
        n = self.n
        import random
        rng = random.Random(rounds_seed)
        admin = {"Authorization": f"Bearer {token(ADMIN_ID, 'admin')}"}
        now = dt.datetime.now(dt.timezone.utc)
        since = (now - dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
        # the middle of the side's event log: half of it is before
        until = (now - dt.timedelta(seconds=self.events_span / 2)).isoformat().replace("+00:00", "Z")
        last_page = max(1, -(-n["courses"] // 20))
        student_tokens = {}
        # cursors as a client gets them: the next of the page before
        if key == "courses.after":
            deep_cursor = self.next_cursor(f"/api/courses?page={max(1, last_page - 1)}", {})
        elif key == "events.after":
            deep_cursor = self.next_cursor(f"/api/events?until={until}", admin)

        def student(user):
            if user not in student_tokens:
                student_tokens[user] = {"Authorization": f"Bearer {token(user)}"}
            return student_tokens[user]

        def make(client, _index):
            if key == "live":
                return "GET", "/health/live", {}
            if key == "courses.first":
                return "GET", "/api/courses", {}
            if key == "courses.deep":
                return "GET", f"/api/courses?page={last_page}", {}
            if key == "courses.after":
                return "GET", f"/api/courses?after={deep_cursor}", {}
            if key == "events.after":
                return "GET", f"/api/events?after={deep_cursor}", admin
            if key == "course":
                return "GET", f"/api/courses/{rng.randint(1, n['courses'])}", {}
            if key == "reviews":
                return "GET", f"/api/courses/{rng.randint(1, n['courses'])}/reviews", {}
            if key == "notifications":
                return "GET", "/api/users/me/notifications", student(rng.randint(1, n["users"]))
            if key == "notifications.again":
                return "GET", "/api/users/me/notifications", student(1 + client)
            if key == "events":
                return "GET", "/api/events", admin
            if key == "events.type":
                return "GET", "/api/events?type=course.enrolled", admin
            if key == "events.user":
                return "GET", f"/api/events?user_id={rng.randint(1, n['users'])}", admin
            if key == "events.course":
                return "GET", f"/api/events?course_id={rng.randint(1, n['courses'])}", admin
            if key == "events.since":
                return "GET", f"/api/events?since={since}", admin
            if key == "events.until":
                return "GET", f"/api/events?until={until}", admin
            if key == "summary":
                return "GET", "/api/analytics/summary", {}
            if key == "enroll":
                self.next_user += 1
                return ("POST", f"/api/courses/{rng.randint(1, n['courses'])}/enroll",
                        student(self.next_user))
            raise KeyError(key)
        return make


class Floor:
    """What any read costs before the suite adds anything: plain nameko's ``@http`` calling one
    ``@rpc`` that returns its argument (bench/plain_services.py: no kit, no database, no auth),
    two ``nameko run`` processes beside both suites, measured in the same rounds."""

    def __init__(self, vhost, tmp):
        self.vhost, self.tmp = vhost, tmp
        self.services = []

    def start(self):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = {"AMQP_URI": self.vhost.amqp_uri, "max_workers": 4,
                  "WEB_SERVER_ADDRESS": f"127.0.0.1:{port}",
                  "LOGGING": {"version": 1, "root": {"level": "WARNING"}}}
        deadline = time.monotonic() + 120
        for label, target, ready in (
                ("floor_echo", "bench.plain_services:PlainEcho",
                 lambda: self.vhost.consumers("rpc-plain_echo") > 0),
                ("floor_web", "bench.plain_services:PlainWeb", procs.http_ok(self.url + "/rpc"))):
            service = procs.Service(label, [target], config, self.tmp, ready)
            self.services.append(service)
            service.start(ROOT)
            service.wait_ready(deadline)

    def stop(self):
        for service in self.services:
            service.terminate()
        for service in self.services:
            service.stop()


class ScaleBench:
    def __init__(self, args):
        self.args = args
        self.sizes = QUICK if args.quick else FULL
        self.run_name = f"kn_bench_{uuid.uuid4().hex[:8]}"
        self.tmp = tempfile.mkdtemp(prefix="kn-bench-scale-")
        self.values = {}  # key -> [per round]
        self.growth = []
        self.floor = None

    def record(self, key, value):
        self.values.setdefault(key, []).append(value)

    def run(self):
        started = time.time()
        small = Side("small", self.sizes["small"], self.run_name, self.tmp,
                     # the growth phase: sent outbox rows kept 30 s, inbox records the floor (1 h),
                     # aged by the harness (see run_growth); a sweep every 2 s
                     {"OUTBOX_RETENTION": 30, "INBOX_RETENTION": 3600, "RETENTION_INTERVAL": 2,
                      "RETENTION_BATCH_SIZE": 1000}, event_span(self.sizes, "small"))
        large = Side("large", self.sizes["large"], self.run_name, self.tmp, {},
                     event_span(self.sizes, "large"))
        self.sides = (small, large)
        try:
            for side in self.sides:
                log(f"{side.label}: databases {side.name}_*, loading")
                side.prepare()
            for side in self.sides:
                side.start()
            self.floor = Floor(small.vhost, self.tmp)
            self.floor.start()
            self.load_at_first_round = [round(x, 2) for x in os.getloadavg()]
            log(f"both suites up; load average {self.load_at_first_round}")
            for round_ in range(1, self.args.runs + 1):
                log(f"round {round_}/{self.args.runs}")
                self.run_requests(round_)
                self.run_pipeline()
            self.run_growth(small)
        finally:
            if self.floor is not None:
                self.floor.stop()
            for side in self.sides:
                try:
                    side.stop()
                except Exception as exc:  # noqa: BLE001 (the other side still stops)
                    log(f"stopping {side.label}: {exc}")
        self.elapsed = time.time() - started
        shutil.rmtree(self.tmp, ignore_errors=True)
        return self.report()

    # -- requests ---------------------------------------------------------------------------

    def run_floor(self):
        for clients, total in self.sizes["requests"].items():
            make = lambda _client, _index: ("GET", "/rpc", {})  # noqa: E731
            closed_loop(self.floor.url, 1, 3, make)
            ok, errors, seconds, lat = closed_loop(self.floor.url, clients, total // clients, make)
            if errors:
                raise RuntimeError(f"floor: {errors} failed requests")
            self.record(f"floor.c{clients}.p50", percentile(lat, 50))
            self.record(f"floor.c{clients}.p99", percentile(lat, 99))
            self.record(f"floor.c{clients}.rate", ok / seconds)
            log(f"  floor          {clients:2d} clients: p50 {percentile(lat, 50):.1f} ms, "
                f"p99 {percentile(lat, 99):.1f} ms")

    def run_requests(self, round_):
        self.run_floor()  # before the round's reads and after: two samples a round
        self._run_reads(round_)
        self.run_floor()

    def _run_reads(self, round_):
        for key, _ in REQUESTS:
            for clients, total in self.sizes["requests"].items():
                p50 = {}
                for side in self.sides:
                    make = side.request_maker(key, round_ * 1000 + clients)
                    closed_loop(side.url, 1, 3, make)  # warm: connections, caches
                    ok, errors, seconds, lat = closed_loop(side.url, clients, total // clients,
                                                           make)
                    if errors:
                        raise RuntimeError(f"{side.label} {key}: {errors} failed requests")
                    base = f"{key}.c{clients}.{side.label}"
                    self.record(base + ".p50", percentile(lat, 50))
                    self.record(base + ".p99", percentile(lat, 99))
                    self.record(base + ".rate", ok / seconds)
                    p50[side.label] = percentile(lat, 50)
                ratio = p50["large"] / p50["small"]
                self.record(f"{key}.c{clients}.ratio", ratio)
                log(f"  {key:14s} {clients:2d} clients: p50 small {p50['small']:.1f} ms, "
                    f"large {p50['large']:.1f} ms ({ratio:.2f}x)")

    # -- relay, consumers, replay -------------------------------------------------------------

    def run_pipeline(self):
        n = self.sizes["relay"]
        for side in self.sides:
            rates = self.relay_and_consume(side, n)
            for key, value in rates.items():
                self.record(f"{key}.{side.label}", value)
            self.record(f"replay.{side.label}", self.replay(side))
            log(f"  {side.label}: " + ", ".join(f"{k} {v:.0f}/s" for k, v in rates.items())
                + f", replay {self.values[f'replay.{side.label}'][-1]:.0f}/s")
        for key, _, _ in PIPELINE:
            self.record(f"{key}.ratio", self.values[f"{key}.small"][-1]
                        / self.values[f"{key}.large"][-1])  # small rate / large rate: cost ratio

    def relay_and_consume(self, side, n):
        """``n`` unsent course.enrolled rows into course's outbox at once (SQL); the relay's
        rate while it has that backlog, and each consumer's while it has one."""
        mark = side.dbs.scalar("course", "SELECT max(id) FROM outbox_events") or 0
        started = dt.datetime.now(dt.timezone.utc)
        users, courses = side.n["users"], side.n["courses"]
        conn = side._connect("course")
        try:
            conn.run(
                "INSERT INTO outbox_events (event_id, event_type, body, headers, created_at) "
                "SELECT e.event_id, 'course.enrolled', json_build_object('event_id', e.event_id, "
                "'event_type', 'course.enrolled', 'timestamp', now(), 'source', 'course', "
                "'version', 1, 'data', json_build_object('enrollment_id', 0, 'user_id', "
                f"(i % {users}) + 1, 'course_id', (i % {courses}) + 1, 'course_title', 'Course'))"
                "::text, '{}', now() FROM generate_series(1, :n) i, "
                "LATERAL (SELECT md5(random()::text || i) AS event_id) e", n=n)
        finally:
            conn.close()
        wait_for(lambda: side.dbs.scalar(
            "course", "SELECT count(*) FROM outbox_events WHERE id > :mark AND sent_at IS NULL",
            mark=mark) == 0, 300, f"{side.label}: relay")
        sent = [parse_time(r[0]) for r in side.dbs.query(
            "course", "SELECT sent_at FROM outbox_events WHERE id > :mark", mark=mark)]
        rates = {"relay": backlog_rate(sent)}
        for db, consumer, key in (("notification", "notification.confirm_enrollment",
                                   "consumer.notification"),
                                  ("analytics", "analytics.record_event", "consumer.analytics")):
            query = ("SELECT processed_at FROM inbox_records WHERE consumer = :consumer "
                     "AND processed_at >= :started")
            wait_for(lambda: len(side.dbs.query(db, query, consumer=consumer, started=started))
                     >= n, 300, f"{side.label}: {consumer}")
            times = [parse_time(r[0]) for r in side.dbs.query(db, query, consumer=consumer,
                                                                started=started)]
            rates[key] = backlog_rate(times)
        return rates

    def replay(self, side):
        """In process (the command's own function, as ``knowledge-nest replay --to-queue``):
        the newest ``replay`` events of the log, or the whole log if it holds fewer."""
        import io
        from services.analytics.replay import replay
        count = min(self.sizes["replay"], side.dbs.scalar("analytics", "SELECT count(*) FROM event_log"))
        since = side.dbs.scalar("analytics", "SELECT timestamp FROM event_log "
                                "ORDER BY timestamp DESC OFFSET :k LIMIT 1", k=count - 1)
        config = {"AMQP_URI": side.vhost.amqp_uri,
                  "DB_URIS": {"analytics:Base": side.dbs.url("analytics")}}
        started = time.perf_counter()
        replay(config, parse_datetime(since), to_queue=REPLAY_QUEUE, out=io.StringIO())
        seconds = time.perf_counter() - started
        side.vhost.purge(REPLAY_QUEUE)
        return count / seconds

    # -- bounded growth -----------------------------------------------------------------------

    def run_growth(self, side):
        """Steady enrollments on small with the sweep on: after each step the inbox records
        are aged by two hours (as tests/integration/test_retention.py does: the retention's floor
        is an hour), then the kit's tables are measured once the sweep has run."""
        log("growth: steady enrollments, the retention sweep on")
        rate, seconds = self.sizes["growth_rate"], self.sizes["growth_seconds"]
        tables = [("course", "outbox_events"), ("notification", "inbox_records"),
                  ("analytics", "inbox_records")]
        for step in range(1, self.sizes["growth_steps"] + 1):
            make = side.request_maker("enroll", 50_000 + step)
            results = open_loop(side.url, rate, rate * seconds, make)
            ok = sum(1 for r in results if r[2] == 201)
            wait_for(lambda: side.dbs.scalar(
                "course", "SELECT count(*) FROM outbox_events WHERE sent_at IS NULL") == 0,
                120, "relay")
            self.wait_consumers_idle(side)
            for db in ("notification", "analytics"):
                side.dbs.engine(db)  # (connect before the update below)
                conn = side._connect(db)
                try:
                    conn.run("UPDATE inbox_records SET processed_at = processed_at "
                             "- interval '2 hours' WHERE processed_at > now() - interval '1 hour'")
                finally:
                    conn.close()
            time.sleep(2 * 2 + 1)  # two sweeps (RETENTION_INTERVAL 2 s)
            # what autovacuum does within its naptime (a minute; a step is shorter): the deleted
            # rows' space becomes reusable, so bytes show what rows do instead of lagging a
            # minute behind (plain VACUUM, as autovacuum runs it: nothing is given back to the OS)
            for db, table in tables:
                conn = side._connect(db)
                try:
                    conn.run(f"VACUUM {table}")
                finally:
                    conn.close()
            sample = {"step": step, "enrollments": ok, "total_enrollments":
                      side.dbs.scalar("course", "SELECT count(*) FROM enrollments")}
            for db, table in tables:
                sample[f"{db}.{table}.rows"] = side.dbs.scalar(db, f"SELECT count(*) FROM {table}")
                sample[f"{db}.{table}.mb"] = side.dbs.scalar(
                    db, f"SELECT pg_total_relation_size('{table}')") / 2 ** 20
            sample["databases.mb"] = sum(side.dbs.size_bytes(db) for db in SERVICES) / 2 ** 20
            self.growth.append(sample)
            log("  step %d: %d enrollments (%d in all); kit rows %s; kit tables %.2f MB"
                % (step, ok, sample["total_enrollments"],
                   [sample[f"{db}.{t}.rows"] for db, t in tables],
                   sum(sample[f"{db}.{t}.mb"] for db, t in tables)))

    @staticmethod
    def wait_consumers_idle(side, timeout=120):
        """Until notification's and analytics' queues hold nothing, ready or unacknowledged
        (the management API's counts lag by up to its 5 s refresh: seen empty for 5 s)."""
        queues = ("notification.confirm_enrollment", "analytics.record_event")
        deadline = time.monotonic() + timeout
        empty_since = None
        while time.monotonic() < deadline:
            if all((side.vhost.queue(q) or {}).get("messages", 1) == 0 for q in queues):
                empty_since = empty_since or time.monotonic()
                if time.monotonic() - empty_since >= 5:
                    return
            else:
                empty_since = None
            time.sleep(0.5)
        raise RuntimeError(f"{side.label}: consumers still busy after {timeout} s")

    # -- report -------------------------------------------------------------------------------

    def report(self):
        medians = {key: statistics.median(v) for key, v in self.values.items()}
        return {"mode": "quick" if self.args.quick else "full", "runs": self.args.runs,
                "database": "postgresql", "seconds": round(self.elapsed, 1),
                "machine": machine("postgresql"), "sizes": self.sizes,
                "loaded_rows": {side.label: side.rows for side in self.sides},
                "load_seconds": {side.label: round(side.load_seconds, 1) for side in self.sides},
                "values": self.values, "medians": medians, "growth": self.growth,
                "load_average_at_first_round": self.load_at_first_round}


def parse_datetime(value):
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return dt.datetime.fromtimestamp(parse_time(value), dt.timezone.utc)


def backlog_rate(times):
    """Events after the first timestamp over the time since it (a batch shares a timestamp)."""
    times = sorted(times)
    if len(times) < 2 or times[-1] <= times[0]:
        return float("nan")
    return sum(1 for t in times if t > times[0]) / (times[-1] - times[0])


READ_P99_TARGET_MS = 20.0
RATIO_TARGET = 1.5


def check_complete(result):
    missing = []
    medians = result["medians"]
    for key, _ in REQUESTS:
        for clients in result["sizes"]["requests"]:
            for side in ("small", "large"):
                for stat in ("p50", "p99", "rate"):
                    name = f"{key}.c{clients}.{side}.{stat}"
                    if not medians.get(name, 0) > 0:
                        missing.append(name)
    for key, _, _ in PIPELINE:
        for side in ("small", "large"):
            if not medians.get(f"{key}.{side}", 0) > 0:
                missing.append(f"{key}.{side}")
    for clients in result["sizes"]["requests"]:
        for stat in ("p50", "p99", "rate"):
            if not medians.get(f"floor.c{clients}.{stat}", 0) > 0:
                missing.append(f"floor.c{clients}.{stat}")
    if not result["growth"]:
        missing.append("growth")
    return missing


def markdown_section(result):
    medians = result["medians"]
    sizes = result["sizes"]
    large, small = sizes["large"], sizes["small"]
    lines = ["## Data scale: near-empty against production-sized tables (PostgreSQL)", "",
             run_header(result, "python -m bench.scale" + (" --quick" if result["mode"] == "quick"
                                                            else "")), "",
             f"Large: {large['users']:,} users, {large['courses']:,} courses, "
             f"{large['enrollments']:,} enrollments with as many sent outbox rows, notifications "
             f"and notification inbox records, {large['events']:,} analytics events with their "
             f"inbox records, {large['reviews']:,} reviews (loaded in SQL in "
             f"{result['load_seconds']['large']} s). Small: {small['users']} users, "
             f"{small['courses']} courses, {small['enrollments']} enrollments, {small['events']} "
             f"events, {small['reviews']} reviews: as many per user, per course and per minute of "
             f"the event log as large, so a page holds as many items on both. Both suites ran at once; each round measured small then large; a ratio "
             f"is large / small within a round, the figure its median over "
             f"{result['runs']} rounds. Targets: ratio ≤ {RATIO_TARGET}×, a read's p99 < "
             f"{READ_P99_TARGET_MS:.0f} ms at 1 client. Load average when the first round "
             f"started (after the bulk load): {result.get('load_average_at_first_round')}.", ""]
    for clients in sizes["requests"]:
        clients = int(clients)
        floor = f"floor.c{clients}"
        floor_p99 = medians.get(floor + ".p99")
        lines += [f"### Requests, {clients} client{'s' if clients > 1 else ''} (ms)", "",
                  "| request | small p50 | large p50 | ratio (p50) | small p99 | large p99 | "
                  "large p99 / floor p99 | large req/s | met |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for key, what in REQUESTS:
            base = f"{key}.c{clients}"
            ratio = medians.get(f"{base}.ratio")
            p99 = medians.get(f"{base}.large.p99")
            met = ratio is not None and ratio <= RATIO_TARGET
            if clients == 1 and key in READS and p99 is not None:
                met = met and p99 < READ_P99_TARGET_MS
            over_floor = f"{p99 / floor_p99:.2f}×" if p99 and floor_p99 else "–"
            lines.append(
                f"| {what} | {_f(medians.get(base + '.small.p50'))} | "
                f"{_f(medians.get(base + '.large.p50'))} | {_f(ratio, 2)}× | "
                f"{_f(medians.get(base + '.small.p99'))} | {_f(p99)} | {over_floor} | "
                f"{_f(medians.get(base + '.large.rate'), 0)} | {'yes' if met else '**no**'} |")
        if medians.get(floor + ".p50") is not None:
            lines += ["", f"The floor in the same rounds (before and after each round's requests, "
                      f"the median of those): plain nameko's `@http` calling one `@rpc` that "
                      f"returns its argument (no kit, no database, no auth; "
                      f"bench/plain_services.py): p50 {_f(medians[floor + '.p50'])} ms, p99 "
                      f"{_f(medians[floor + '.p99'])} ms, {_f(medians[floor + '.rate'], 0)} req/s."]
        lines.append("")
    lines += ["### Relay, consumers, replay", "",
              "| measure | small | large | small / large | met |", "|---|---:|---:|---:|---|"]
    for key, what, unit in PIPELINE:
        ratio = medians.get(f"{key}.ratio")
        lines.append(f"| {what} | {_f(medians.get(key + '.small'), 0)} | "
                     f"{_f(medians.get(key + '.large'), 0)} | {_f(ratio, 2)}× | "
                     f"{'yes' if ratio is not None and ratio <= RATIO_TARGET else '**no**'} |")
    lines += ["", f"Relay and consumers: {sizes['relay']:,} new course.enrolled rows committed "
              "to course's outbox at once (SQL), with the loaded rows present; rates while each had "
              f"a backlog. Replay: the newest {sizes['replay']:,} events of the log (all of "
              "small's), to one queue.", ""]
    growth = result["growth"]
    if growth:
        keys = [k for k in growth[0] if (k.endswith(".rows") or k.endswith(".mb"))
                and k != "databases.mb"]
        lines += ["### Bounded growth (small, the retention sweep on)", "",
                  "Steady enrollments at %d req/s for %d s per step; OUTBOX_RETENTION 30 s, "
                  "INBOX_RETENTION 3600 s (the floor), RETENTION_INTERVAL 2 s; after each step "
                  "the inbox records are aged by 2 h (UPDATE processed_at), then two sweeps run, "
                  "then a plain VACUUM of these tables (what autovacuum does within a minute). "
                  "Rows and bytes (pg_total_relation_size, MB) of the kit's tables:"
                  % (sizes["growth_rate"], sizes["growth_seconds"]), "",
                  "| step | enrollments (all) | " + " | ".join(keys) + " | 4 databases, MB |",
                  "|---:|---:|" + "---:|" * len(keys) + "---:|"]
        for sample in growth:
            lines.append(f"| {sample['step']} | {sample['total_enrollments']:,} | "
                         + " | ".join(_f(sample[k], 0 if k.endswith('.rows') else 2) for k in keys)
                         + f" | {sample['databases.mb']:.1f} |")
    return "\n".join(lines) + "\n"


def _f(value, digits=1):
    if value is None or value != value:
        return "—"
    return f"{value:,.{digits}f}"


def main(argv=None):
    from bench import report
    return report.run_main(argv, "python -m bench.scale", __doc__, ScaleBench, "results-scale.json", markdown_section,
                           check_complete, quick_help="small sizes (a few minutes)")


if __name__ == "__main__":
    sys.exit(main())
