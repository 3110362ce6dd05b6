"""A new consumer of an existing event, added without touching the kit or any publisher.

The reporting service below exists only in this test. Its queue is declared up front because the
deployment's routing contract (config's SUBSCRIPTIONS) lists it, so it receives the enrollments
made before it first started; the course service that publishes them is unchanged.
"""
import pytest
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import BigInteger, Integer, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from contracts import COURSE_ENROLLED, SUBSCRIPTIONS
from services.auth.service import AuthService
from services.course.service import CourseService
from services.kit import Database, InboxHorizonMixin, InboxRecordMixin, event_handler
from services.kit.db import normalize_url
from tests.e2e.conftest import CHEAP_HASHING
from tests.support.broker import wait_until
from tests.support.db import query

pytestmark = pytest.mark.integration

class ReportingBase(DeclarativeBase):
    pass


class InboxRecord(InboxRecordMixin, ReportingBase):
    pass


class InboxHorizon(InboxHorizonMixin, ReportingBase):
    pass


class Enrolled(ReportingBase):
    __tablename__ = "enrolled"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    course_id: Mapped[int] = mapped_column(BigInteger)
    course_title: Mapped[str] = mapped_column(String(300))


class ReportingService:
    name = "reporting"
    db = Database(ReportingBase)

    @event_handler(COURSE_ENROLLED)
    def record(self, event):
        data = COURSE_ENROLLED.read(event.data)
        self.db.session.add(Enrolled(course_id=data["course_id"],
                                     course_title=data["course_title"]))


def test_a_new_consumer_receives_what_was_published_before_it_first_ran(
        services_config, make_database_url, database_backend, runner_factory, container_factory):
    reporting_db = make_database_url(database_backend)
    engine = create_engine(normalize_url(reporting_db))
    ReportingBase.metadata.create_all(engine)
    engine.dispose()
    config = services_config("auth", "course", **CHEAP_HASHING)
    config["SUBSCRIPTIONS"] = dict(SUBSCRIPTIONS, **{"reporting.record": (COURSE_ENROLLED,)})
    config["DB_URIS"]["reporting:ReportingBase"] = reporting_db
    runner_factory(config, AuthService, CourseService).start()

    with ClusterRpcProxy(config, timeout=30) as rpc:
        teacher = rpc.auth.register("t@example.com", "correct horse battery staple", "T",
                                    "instructor")
        student = rpc.auth.register("s@example.com", "correct horse battery staple", "S")
        course = rpc.course.create_course(teacher["id"], "Contracts", "First")
        rpc.course.enroll(student["id"], course["id"])

    container_factory(ReportingService, config).start()  # first start: after the event

    rows = wait_until(lambda: query(reporting_db, select(Enrolled.course_id,
                                                         Enrolled.course_title)),
                      timeout=20, message="the earlier enrollment reached reporting")
    assert [tuple(row) for row in rows] == [(course["id"], "Contracts")]
