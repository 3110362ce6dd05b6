"""The fault matrix's cluster rows (docs/reliability.md, H1-H4): the whole suite in `nameko run`
processes configured by config.yml and the environment (RABBITMQ_HOST or RABBITMQ_HOSTS,
QUEUE_TYPE), on the session's three-node test cluster, written to over HTTP (http_suite.py)
while a broker node restarts, dies, or is cut off. Over HTTP the only answers are 201/409 or
503; every accepted write gets exactly one notification."""
import signal
import time

import eventlet
import pytest

from tests.faults.http_suite import MODULES, HttpSuite, check_http_row
from tests.support.broker import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.cluster]

ENROLLED_QUEUE = "notification.confirm_enrollment"
ALL = list(MODULES)
WITHOUT_NOTIFICATION = [name for name in ALL if name != "notification"]
# one scheduler's worth of work at a time: the kill must land mid-backlog on a busy machine
# a backlog handled a few events at a time, so that a kill lands in the middle of it
SLOW_NOTIFICATION = {"MAX_WORKERS": "2", "PREFETCH_COUNT": "10", "EVENT_MAX_BATCH": "1"}


@pytest.fixture
def http_suite(tmp_path, make_service_database, cluster_vhost):
    suites = []

    def make(broker_env, users, postgres=(), **extra_env):
        databases = {name: make_service_database(
            name, "postgresql" if name in postgres else "sqlite")
            for name in ("auth", "course", "review", "notification", "analytics")}
        suite = HttpSuite(tmp_path, databases, dict(broker_env, RABBITMQ_VHOST=cluster_vhost.name),
                          users, extra_env)
        suites.append(suite)
        return suite

    yield make
    for suite in suites:
        suite.stop_all()


def cluster_env(cluster, hosts=None):
    return {"RABBITMQ_HOSTS": hosts or cluster.hosts, "QUEUE_TYPE": "quorum"}


def test_h1_broker_restart_during_writes(http_suite, cluster_vhost):
    """stop_app/start_app of the one node the whole suite uses (the seed's broker restart)."""
    node = cluster_vhost.cluster.nodes[0]
    suite = http_suite({"RABBITMQ_HOST": "127.0.0.1", "RABBITMQ_PORT": str(node.amqp_port)},
                       users=80)
    suite.start("suite", ALL)
    suite.wait_healthy()
    suite.poll_health()
    suite.write_all(range(1, 16))
    fault_at = time.monotonic()

    def restart():
        node.stop_app()  # returns once the node refuses connections
        eventlet.sleep(5)
        node.start_app()  # returns once it accepts them again
        return time.monotonic() - fault_at

    restarting = eventlet.spawn(restart)
    suite.write_all(range(16, 61), pause=0.1)
    back_after = restarting.wait()
    suite.write_all(range(61, 81))
    suite.settle()
    suite.wait_healthy(timeout=60)
    row = suite.measure(health_recovery_s=suite.recovery_after(fault_at))
    row = check_http_row("H1", f"broker restart (stop_app, 5 s, start_app: the node was back "
                         f"{back_after:.1f} s after the fault) of the node every service uses, "
                         f"during 80 HTTP writes", row)
    assert int(row["answers"].split("/")[2]) > 0, row  # the restart was felt: 503s, no 500


def test_h2_quorum_leader_node_killed_during_writes_and_during_a_backlog(http_suite,
                                                                         cluster_vhost):
    cluster = cluster_vhost.cluster
    suite = http_suite(cluster_env(cluster), users=160)
    suite.start("services", WITHOUT_NOTIFICATION)
    suite.start("notification", ["notification"], **SLOW_NOTIFICATION)
    suite.wait_healthy()
    suite.poll_health()
    suite.write_all(range(1, 21))

    # 1. the leader of the consumer queue's node dies amid a stream of writes
    first = cluster.leader(cluster_vhost.name, ENROLLED_QUEUE)
    fault_at = time.monotonic()
    first.kill()
    suite.write_all(range(21, 41))
    returning = eventlet.spawn(first.start)
    suite.write_all(range(41, 61))
    returning.wait()
    cluster.await_online()
    suite.settle()
    suite.wait_healthy(timeout=60)
    recovery = suite.recovery_after(fault_at)

    # 2. ... and while a backlog of 100 is consumed
    suite.signal("notification", signal.SIGSTOP)
    backlog_from = suite.notification_count()
    suite.write_all(range(61, 161), pause=0.01)
    wait_until(lambda: len(suite.accepted_events()) == 160 and suite.measure()[
        "events_published"] == 160, timeout=60, message="the backlog published")
    second = cluster.leader(cluster_vhost.name, ENROLLED_QUEUE)
    suite.signal("notification", signal.SIGCONT)
    wait_until(lambda: suite.notification_count() >= backlog_from + 20, timeout=60,
               interval=0.02, message="20 of the backlog handled")
    handled_at_kill = suite.notification_count() - backlog_from
    second.kill()
    suite.settle(timeout=60)
    second.start()
    cluster.await_online()
    suite.settle()
    row = suite.measure(health_recovery_s=recovery)
    check_http_row("H2", f"3-node cluster, quorum queues: the node of the consumer queue's "
                   f"leader ({first.name.split('@')[0]}) SIGKILLed during 60 HTTP writes, "
                   f"restarted; then the new leader's ({second.name.split('@')[0]}) after "
                   f"{handled_at_kill} of a backlog of 100", row)
    assert handled_at_kill < 100, "the backlog was handled before the kill"


def test_h3_two_instances_of_course_and_notification_one_of_each_sigkilled(http_suite,
                                                                           cluster_vhost):
    cluster = cluster_vhost.cluster
    suite = http_suite(cluster_env(cluster), users=100, postgres=("course", "notification"))
    suite.start("services", ["auth", "review", "analytics", "gateway"])
    for label in ("course-1", "course-2"):
        suite.start(label, ["course"])
    for label in ("notification-1", "notification-2"):
        suite.start(label, ["notification"], **SLOW_NOTIFICATION)
    suite.wait_healthy()
    suite.poll_health()
    for label in ("notification-1", "notification-2"):
        suite.signal(label, signal.SIGSTOP)  # a backlog builds up

    def kill_course_midway(user):
        if user == 40:
            suite.kill("course-1")

    suite.write_all(range(1, 101), pause=0.01, before=kill_course_midway)
    backlog = len(suite.accepted_events())
    for label in ("notification-1", "notification-2"):
        suite.signal(label, signal.SIGCONT)
    wait_until(lambda: suite.notification_count() >= 20, timeout=60, interval=0.02,
               message="20 of the backlog handled")
    fault_at = time.monotonic()  # /health was 503 while both notifications were stopped
    handled_at_kill = suite.notification_count()
    suite.kill("notification-1")
    suite.settle()
    suite.wait_healthy(timeout=60)
    row = suite.measure(health_recovery_s=suite.recovery_after(fault_at))
    check_http_row("H3", f"two `nameko run` instances each of course and notification "
                   f"(PostgreSQL): one course SIGKILLed amid 100 HTTP writes, one notification "
                   f"after {handled_at_kill} of the backlog of {backlog}", row)
    assert handled_at_kill < backlog


def test_h4_one_node_cut_off_by_the_network_then_healed(http_suite, cluster_vhost):
    from tests.support.proxy import TcpProxy
    cluster = cluster_vhost.cluster
    proxies = [TcpProxy("127.0.0.1", node.amqp_port) for node in cluster.nodes]
    try:
        hosts = ",".join(f"127.0.0.1:{proxy.port}" for proxy in proxies)
        suite = http_suite(cluster_env(cluster, hosts), users=80)
        suite.start("suite", ALL)
        suite.wait_healthy()
        suite.poll_health()
        suite.write_all(range(1, 21))
        fault_at = time.monotonic()
        proxies[0].cut()  # the first node: the one every connection of the suite is on
        suite.write_all(range(21, 61), pause=0.05)
        proxies[0].restore()
        suite.write_all(range(61, 81))
        suite.settle()
        suite.wait_healthy(timeout=60)
        row = suite.measure(health_recovery_s=suite.recovery_after(fault_at))
    finally:
        for proxy in proxies:
            proxy.close()
    check_http_row("H4", "3-node cluster, quorum queues: the node every connection was on cut "
                   "off (its AMQP port blocked by the test's TCP proxy) during 80 HTTP "
                   "writes, then healed", row)
