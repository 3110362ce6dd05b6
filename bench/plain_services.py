"""The plain-nameko baseline: nameko's own EventDispatcher, @event_handler, @http and @rpc, and
the enrollment written the naive way (HTTP -> RPC -> SQLAlchemy commit -> nameko dispatch; no
outbox, no inbox). Run with ``nameko run`` by bench/harness.py; driven over HTTP control routes.
"""
import json
import time

from eventlet.greenpool import GreenPool
from nameko.events import EventDispatcher, event_handler
from nameko.rpc import RpcProxy, rpc
from nameko.web.handlers import http
from nameko_sqlalchemy import DatabaseSession
from sqlalchemy import BigInteger, Integer, String, UniqueConstraint, event, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bench.payload import event_data

SQLITE_ENGINE_OPTIONS = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 30,
                         "connect_args": {"check_same_thread": False, "timeout": 30}}
# On PostgreSQL the kit's pool for 10 workers (services/kit/db.py), with stock pg8000 (three
# round trips per statement, where the kit's connections make one).
POSTGRES_ENGINE_OPTIONS = {"pool_size": 13, "max_overflow": 10, "pool_pre_ping": True,
                           "pool_timeout": 10}


def _sqlite_pragmas(dbapi_connection, _record):
    # the same settings as the kit's SQLite engines (services/kit/db.py): a like-for-like baseline
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class WalDatabaseSession(DatabaseSession):
    """nameko-sqlalchemy's session; on SQLite with the kit's settings (one connection, WAL)."""

    def setup(self):
        uri = next(iter(self.container.config["DB_URIS"].values()))
        sqlite = uri.startswith("sqlite")
        self.engine_options = SQLITE_ENGINE_OPTIONS if sqlite else POSTGRES_ENGINE_OPTIONS
        super().setup()
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)


class NaiveBase(DeclarativeBase):
    pass


class NaiveCourse(NaiveBase):
    __tablename__ = "courses"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    enrollment_count: Mapped[int] = mapped_column(Integer, default=0)


class NaiveEnrollment(NaiveBase):
    __tablename__ = "enrollments"
    __table_args__ = (UniqueConstraint("user_id", "course_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    course_id: Mapped[int] = mapped_column(Integer)


def _json(body, status=200):
    return status, {"Content-Type": "application/json"}, json.dumps(body)


class PlainSource:
    """Dispatches N events with nameko's EventDispatcher (confirms on, persistent)."""
    name = "plain_src"
    dispatch = EventDispatcher()

    @http("POST", "/dispatch/<int:count>/<int:concurrency>")
    def dispatch_many(self, request, count, concurrency):
        data = event_data()
        started = time.monotonic()
        if concurrency <= 1:
            for _ in range(count):
                self.dispatch("bench.event", data)
        else:
            pool = GreenPool(concurrency)
            for _ in range(count):
                pool.spawn_n(self.dispatch, "bench.event", data)
            pool.waitall()
        return _json({"count": count, "seconds": time.monotonic() - started})


class PlainSink:
    """Counts nameko events; the harness reads the count and the times of first and last."""
    name = "plain_sink"
    stats = {"count": 0, "first": None, "last": None}

    @event_handler("plain_src", "bench.event")
    def handle(self, payload):
        now = time.time()
        stats = PlainSink.stats
        if stats["first"] is None:
            stats["first"] = now
        stats["count"] += 1
        stats["last"] = now

    @http("GET", "/stats")
    def get_stats(self, request):
        return _json(PlainSink.stats)

    @http("POST", "/reset")
    def reset(self, request):
        PlainSink.stats = {"count": 0, "first": None, "last": None}
        return _json(PlainSink.stats)


class PlainEcho:
    name = "plain_echo"

    @rpc
    def ping(self, value):
        return value


class NaiveCourseService:
    """The enrollment, naively: commit, then nameko's dispatch (lost if the broker is away)."""
    name = "naive_course"
    session = WalDatabaseSession(NaiveBase)
    dispatch = EventDispatcher()

    @rpc
    def enroll(self, user_id, course_id):
        course = self.session.get(NaiveCourse, course_id)
        if course is None:
            raise LookupError(f"course {course_id} does not exist")
        enrollment = NaiveEnrollment(user_id=user_id, course_id=course_id)
        self.session.add(enrollment)
        try:
            self.session.flush()
        except IntegrityError:
            self.session.rollback()
            raise ValueError("already enrolled") from None
        self.session.execute(update(NaiveCourse).where(NaiveCourse.id == course_id)
                             .values(enrollment_count=NaiveCourse.enrollment_count + 1))
        self.session.commit()
        result = {"id": enrollment.id, "user_id": user_id, "course_id": course_id}
        self.dispatch("course.enrolled", {"enrollment_id": enrollment.id, "user_id": user_id,
                                          "course_id": course_id, "course_title": course.title})
        return result


class NaiveNotifyBase(DeclarativeBase):
    pass


class NaiveNotification(NaiveNotifyBase):
    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    course_id: Mapped[int] = mapped_column(Integer)
    subject: Mapped[str] = mapped_column(String(200))


class NaiveNotificationService:
    """The enrollment's consumer, naively: nameko's @event_handler, one row, commit (no inbox:
    a redelivery stores it twice). Runs during the naive phases as notification does during ours,
    so that both sides do the whole job on the same 2 cores."""
    name = "naive_notification"
    session = WalDatabaseSession(NaiveNotifyBase)

    @event_handler("naive_course", "course.enrolled")
    def confirm_enrollment(self, payload):
        self.session.add(NaiveNotification(
            user_id=payload["user_id"], course_id=payload["course_id"],
            subject=f"You are enrolled in {payload['course_title']}"))
        self.session.commit()


class PlainWeb:
    """nameko @http + one RPC call, and the naive enrollment's HTTP front."""
    name = "plain_web"
    echo = RpcProxy("plain_echo")
    naive_course = RpcProxy("naive_course")

    @http("GET", "/rpc")
    def rpc_once(self, request):
        return _json({"pong": self.echo.ping(1)})

    @http("POST", "/api/courses/<int:course_id>/enroll/<int:user_id>")
    def enroll(self, request, course_id, user_id):
        try:
            return _json(self.naive_course.enroll(user_id, course_id), 201)
        except Exception as exc:  # noqa: BLE001 (bench: any failure is a non-201)
            return _json({"error": type(exc).__name__}, 409)

