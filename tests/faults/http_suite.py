"""The whole suite as `make run` runs it (config.yml, environment variables, `nameko run`
processes), on the test cluster, written to over HTTP: the harness of the cluster rows of the
fault matrix (test_cluster_matrix.py).

A write is ``POST /api/courses/1/enroll`` by student ``n``. A client that gets a 503 tries again
(after 0.5 s, not the 2 s of Retry-After, to keep the run short) until it gets 201 or 409 (a 409
after a 503: the first try had been accepted). Any other answer is recorded and fails the row.
Ground truth is counted as in the other rows: enrollments in course's database, notifications in
notification's. ``/health`` is polled all along.
"""
import os
import signal
import sys
import time
from collections import Counter

import eventlet
import jwt
import requests
from sqlalchemy import func, select

from services.auth.models import User
from services.course.models import Course, Enrollment, OutboxEvent
from services.notification.models import Contact, Notification
from tests.faults.conftest import ROOT, insert
from tests.support import processes
from tests.support.broker import wait_until
from tests.support.db import query

SECRET = "fault-matrix-secret-that-is-long-enough-0123456789"
SERVICES = ("auth", "course", "review", "notification", "analytics")
MODULES = {name: f"services.{name}.service" for name in SERVICES}
MODULES["gateway"] = "gateway.service"
RETRY_PAUSE = 0.5


def free_port():
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class HttpSuite:
    """``groups``: one ``nameko run`` process per list of service names."""

    def __init__(self, tmp_path, databases, broker_env, users, extra_env=None):
        self.tmp_path = tmp_path
        self.databases = databases  # service -> URL
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = dict(
            os.environ, WEB_SERVER_ADDRESS=f"127.0.0.1:{self.port}", JWT_SECRET=SECRET,
            EVENT_RETRY_DELAYS="[0.5, 1, 2]", OUTBOX_POLL_INTERVAL="0.5", RPC_TIMEOUT="5",
            RABBITMQ_HEARTBEAT="5", PUBLISH_CONFIRM_TIMEOUT="5", HEALTH_TIMEOUT="2",
            MAIL_BACKEND="log", MAIL_RETRY_INTERVAL="0.5", LOG_LEVEL="WARNING",
            PASSWORD_HASH_MEMORY_COST="1024", PASSWORD_HASH_TIME_COST="1", **broker_env,
            **(extra_env or {}))
        for key in ("RABBITMQ_HOST", "RABBITMQ_PORT", "RABBITMQ_HOSTS", "QUEUE_TYPE"):
            if key not in broker_env and key not in (extra_env or {}):
                self.env.pop(key, None)
        for name, url in databases.items():
            self.env[f"{name.upper()}_DATABASE_URL"] = url
        self.users = users
        self.course_db = databases["course"]
        self.notification_db = databases["notification"]
        # the students exist in auth too: the gateway refuses a token whose user does not
        insert(databases["auth"], User(id=999, email="teacher@example.com", name="Teacher",
                                       role="instructor", password_hash="-"),
               *[User(id=n, email=f"u{n}@example.com", name=f"User {n}", role="student",
                      password_hash="-") for n in range(1, users + 1)])
        insert(self.course_db, Course(id=1, title="High Availability 101", description="d",
                                      instructor_id=999))
        insert(self.notification_db,
               *[Contact(user_id=n, email=f"u{n}@example.com", name=f"User {n}")
                 for n in range(1, users + 1)])
        self.processes = {}  # label -> Popen
        self.killed = set()
        self.answers = Counter()  # HTTP status -> count
        self.unexpected = []  # (user, status or exception)
        self.outcome = {}  # user -> 201 or 409
        self.attempted = 0
        self.health = []  # (monotonic time, status)
        self._poller = None

    # -- processes ------------------------------------------------------------------------

    def start(self, label, services, **env):
        log = open(self.tmp_path / f"{label}.log", "ab")
        command = [os.path.join(os.path.dirname(sys.executable), "nameko"), "run",
                   "--config", "config.yml", *[MODULES[name] for name in services]]
        self.processes[label] = processes.Popen(command, cwd=ROOT, stdout=log,
                                                stderr=processes.STDOUT,
                                                env=dict(self.env, **env),
                                                start_new_session=True)
        return self.processes[label]

    def signal(self, label, signum):
        self.processes[label].send_signal(signum)

    def kill(self, label):
        process = self.processes[label]
        process.send_signal(signal.SIGKILL)
        processes.wait(process, timeout=30)
        self.killed.add(label)

    def stop_all(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for process in self.processes.values():
            try:
                processes.wait(process, timeout=30)
            except processes.TimeoutExpired:
                process.kill()
                process.wait()
        if self._poller is not None:
            self._poller.kill()

    def logs(self):
        return "".join(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
                       for path in sorted(self.tmp_path.glob("*.log")))

    def check_alive(self):
        """Fails at once if a process exited that the test did not kill."""
        for label, process in self.processes.items():
            if process.poll() is not None and label not in self.killed:
                raise AssertionError(f"{label} exited ({process.returncode}):\n{self.logs()}")

    def wait_healthy(self, timeout=120):
        def healthy():
            self.check_alive()
            try:
                return requests.get(self.base + "/health", timeout=5).status_code == 200
            except requests.RequestException:
                return False
        wait_until(healthy, timeout=timeout, interval=0.5, message="the suite healthy")

    # -- HTTP -----------------------------------------------------------------------------

    def token(self, user):
        return jwt.encode({"sub": str(user), "role": "student", "exp": int(time.time()) + 3600},
                          SECRET, algorithm="HS256")

    def write(self, user, deadline=120):
        """Enroll ``user`` in course 1, trying again after each 503; its final answer."""
        give_up = time.monotonic() + deadline
        headers = {"Authorization": f"Bearer {self.token(user)}"}
        while time.monotonic() < give_up:
            self.check_alive()
            self.attempted += 1
            try:
                response = requests.post(f"{self.base}/api/courses/1/enroll", headers=headers,
                                         timeout=30)
            except requests.RequestException as exc:
                self.unexpected.append((user, repr(exc)))
                eventlet.sleep(RETRY_PAUSE)
                continue
            self.answers[response.status_code] += 1
            if response.status_code in (201, 409):
                self.outcome[user] = response.status_code
                return response.status_code
            if response.status_code == 503 and response.headers.get("Retry-After"):
                eventlet.sleep(RETRY_PAUSE)
                continue
            self.unexpected.append((user, response.status_code, response.text[:300]))
            return response.status_code
        self.unexpected.append((user, "no 201/409 within the deadline"))

    def write_all(self, users, pause=0.02, before=None):
        """Writes of ``users`` one after another; ``before(user)`` runs before each one."""
        for user in users:
            if before is not None:
                before(user)
            self.write(user)
            eventlet.sleep(pause)

    def poll_health(self):
        def poll():
            while True:
                try:
                    status = requests.get(self.base + "/health", timeout=5).status_code
                except requests.RequestException:
                    status = None
                self.health.append((time.monotonic(), status))
                eventlet.sleep(0.25)
        self._poller = eventlet.spawn(poll)

    def recovery_after(self, fault_at):
        """Seconds from ``fault_at`` until /health answered 200 again after its last non-200
        answer (0.0 if it never stopped answering 200)."""
        after = [(at, status) for at, status in self.health if at >= fault_at]
        down = [index for index, (_, status) in enumerate(after) if status != 200]
        if not down:
            return 0.0
        back = [at for at, status in after[down[-1]:] if status == 200]
        assert back, f"/health not 200 again: {after[-5:]}"
        return round(back[0] - fault_at, 1)

    # -- ground truth ---------------------------------------------------------------------

    def enrolled(self):
        return {row.user_id for row in query(self.course_db, select(Enrollment.user_id))}

    def effects(self):
        return Counter(row.event_id for row in query(
            self.notification_db, select(Notification.event_id)
            .where(Notification.kind == "enrollment_confirmed")))

    def accepted_events(self):
        return {row.event_id for row in query(
            self.course_db, select(OutboxEvent.event_id)
            .where(OutboxEvent.event_type == "course.enrolled"))}

    def notification_count(self):
        return query(self.notification_db, select(func.count()).select_from(Notification)
                     .where(Notification.kind == "enrollment_confirmed"))[0][0]

    def settle(self, timeout=120):
        try:
            wait_until(lambda: self.accepted_events() <= set(self.effects()), timeout=timeout,
                       interval=0.5, message="every accepted write notified")
        except AssertionError:
            pass

    def measure(self, **extra):
        accepted = self.accepted_events()
        effects = self.effects()
        enrolled = self.enrolled()
        answered_201 = {user for user, status in self.outcome.items() if status == 201}
        sent = query(self.course_db, select(func.count()).select_from(OutboxEvent)
                     .where(OutboxEvent.sent_at.is_not(None)))[0][0]
        row = {
            "attempted": self.attempted,
            "accepted": len(enrolled),
            "succeeded": len(self.outcome),  # users that got 201 or 409
            "events_published": sent,
            "delivered": len(set(effects) & accepted),
            "lost": len(accepted - set(effects)),
            "doubled_effects": sum(count - 1 for count in effects.values()),
            "answers": "/".join(str(self.answers.get(code, 0)) for code in (201, 409, 503)),
            "_accepted_events": len(accepted),
            "_unexpected": self.unexpected,
            "_201_not_enrolled": sorted(answered_201 - enrolled),
        }
        row.update(extra)
        return row


def check_http_row(name, description, row):
    """The cluster rows' invariants on top of the matrix's own (check_and_record)."""
    from tests.faults.conftest import check_and_record
    unexpected = row.pop("_unexpected")
    not_enrolled = row.pop("_201_not_enrolled")
    row.setdefault("copies_routed", "-")
    row.setdefault("duplicates_absorbed", "-")
    row.setdefault("dead_lettered", 0)
    assert not unexpected, unexpected  # only 201/409 or 503 (with Retry-After)
    assert not not_enrolled, not_enrolled  # every 201 is an enrollment
    return check_and_record(name, description, row)
