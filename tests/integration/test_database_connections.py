"""A service's pooled PostgreSQL connections dying under it (services/kit/db.py): the course
service running for real on its own migrated database, its connections terminated by the server
(what a restart or failover does to them), called over RPC as the gateway calls it.

- a connection idle longer than PING_AFTER_IDLE_SECONDS is pinged before use: a dead one is
  replaced and no request fails;
- one checked in more recently is not pinged (no round trip for it): if it died since, that one
  request fails as ServiceUnavailable (the gateway's 503), and the next gets a new connection.
"""
import eventlet
import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from services.course.service import CourseService
from services.kit import db
from services.kit.errors import ServiceUnavailable
from tests.conftest import _admin_connection
from tests.support.broker import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def course(runner_factory, services_config):
    # no background loop touches the pool meanwhile: only the test's RPCs do
    config = services_config("course", OUTBOX_POLL_INTERVAL=3600, RETENTION_INTERVAL=3600)
    runner_factory(config, CourseService).start()
    database = config["DB_URIS"]["course:Base"].rsplit("/", 1)[1]
    with ClusterRpcProxy(config, timeout=30) as proxy:
        yield proxy.course, database


def terminate_connections(database):
    """What a database restart does to a client's connections: the server closes them."""
    admin = _admin_connection()
    try:
        admin.run("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE datname = :db AND pid <> pg_backend_pid()", db=database)
        wait_until(lambda: not admin.run("SELECT 1 FROM pg_stat_activity WHERE datname = :db "
                                         "AND pid <> pg_backend_pid()", db=database),
                   timeout=10, message="the server closed the connections")
    finally:
        admin.close()


@pytest.mark.parametrize("database_backend", ["postgresql"])
def test_a_connection_that_died_while_idle_costs_no_request(course, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.2)
    rpc, database = course
    assert rpc.list_courses()["total"] == 0
    terminate_connections(database)
    eventlet.sleep(0.3)  # idle past the ping threshold
    assert rpc.list_courses()["total"] == 0
    assert rpc.list_courses()["total"] == 0


@pytest.mark.parametrize("database_backend", ["postgresql"])
def test_a_connection_that_died_in_use_costs_one_request_a_503(course, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600)
    rpc, database = course
    assert rpc.list_courses()["total"] == 0
    terminate_connections(database)
    with pytest.raises(ServiceUnavailable, match="course: database unavailable"):
        rpc.list_courses()
    # the failure renewed the pool: the next request gets a new connection
    assert rpc.list_courses()["total"] == 0
