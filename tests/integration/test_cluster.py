"""QUEUE_TYPE=quorum on a real three-node cluster (the ``rabbit_cluster`` fixture): every queue
the suite declares is replicated on the three nodes, ``migrate-queues`` turns a classic
subscription (consumer queue, retry queues, DLQ) into quorum queues keeping the messages, and
an event expires into its quorum DLQ. The services reach the cluster through RABBITMQ_HOSTS's
failover URI."""
import time

import amqp
import eventlet
import pytest
from nameko.testing.services import entrypoint_hook

from services.course.service import CourseService
from services.kit.amqp import ConfirmedPublisher, PublishFailed, apply_broker_hosts, event_message
from operations.cli import main as knowledge_nest
from services.notification.service import NotificationService
from tests.integration.test_event_kit import (  # noqa: F401 (fixtures)
    RECORD_QUEUE, Recorder, databases, effects, unsent,
)
from tests.integration.test_queue_options import TypedPublisher, write_config
from tests.support.broker import PlainClient, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

NOTE_SUBSCRIPTION = {RECORD_QUEUE: ["note.created", "user.registered"]}


@pytest.fixture
def database_backend():
    return "sqlite"


@pytest.fixture
def cluster_config(cluster_vhost, databases):  # noqa: F811
    """The kit's test config on the cluster vhost, its AMQP_URI made from RABBITMQ_HOSTS."""
    config = {"AMQP_URI": f"pyamqp://guest:guest@localhost:5672/{cluster_vhost.name}",
              "RABBITMQ_HOSTS": cluster_vhost.cluster.hosts, "DB_URIS": databases,
              "EVENT_RETRY_DELAYS": [0.2, 0.4], "OUTBOX_POLL_INTERVAL": 0.5, "HEARTBEAT": 5,
              "EXTRA_SUBSCRIPTIONS": NOTE_SUBSCRIPTION}
    return apply_broker_hosts(config)


@pytest.fixture
def cluster_plain(cluster_vhost):
    client = PlainClient(cluster_vhost.cluster.amqp_uri(
        cluster_vhost.name, nodes=cluster_vhost.cluster.nodes[:1]))
    yield client
    client.close()


def assert_replicated(cluster, vhost, names):
    queues = cluster.queues(vhost)
    for name in names:
        assert queues[name]["type"] == "quorum", (name, queues[name])
        assert sorted(queues[name]["members"]) == sorted(node.name for node in cluster.nodes), \
            (name, queues[name])


def test_with_quorum_every_queue_of_the_suite_is_replicated_on_three_nodes(
        container_factory, services_config, cluster_vhost):
    config = services_config("course", "notification", QUEUE_TYPE="quorum",
                             AMQP_URI=cluster_vhost.amqp_uri)
    container_factory(CourseService, config).start()
    container_factory(NotificationService, config).start()
    cluster = cluster_vhost.cluster
    queues = wait_until(lambda: {name: queue for name, queue in
                                 cluster.queues(cluster_vhost.name).items()
                                 if name.startswith("rpc.reply-")} and
                        cluster.queues(cluster_vhost.name), timeout=30,
                        message="every queue declared")
    expected = {"rpc-course", "rpc-notification", "notification.confirm_enrollment",
                "notification.confirm_enrollment.dlq",
                "notification.confirm_enrollment.retry.200ms", "course.update_rating"}
    assert expected <= set(queues)
    assert any(name.startswith("rpc.reply-course-") for name in queues)
    assert_replicated(cluster, cluster_vhost.name, queues)  # every one, replies included


def test_migrate_queues_makes_a_classic_subscription_quorum_on_the_cluster_keeping_its_events(
        container_factory, cluster_config, cluster_vhost, cluster_plain, tmp_path, capsys):
    classic = dict(cluster_config, QUEUE_TYPE="classic")
    publisher = container_factory(TypedPublisher, classic)
    publisher.start()
    with entrypoint_hook(publisher, "publish") as publish:
        waiting = [publish("note.created", n) for n in range(5)]
    wait_until(lambda: cluster_plain.message_count(RECORD_QUEUE) == 5, message="events queued")
    publisher.stop()
    cluster = cluster_vhost.cluster
    assert cluster.queues(cluster_vhost.name)[RECORD_QUEUE]["type"] == "classic"

    quorum = dict(cluster_config, QUEUE_TYPE="quorum")
    knowledge_nest(["--config", write_config(tmp_path, quorum), "migrate-queues"])
    out = capsys.readouterr().out
    assert f"{RECORD_QUEUE}: recreated with the configured arguments, 5 message(s)" in out
    assert f"{RECORD_QUEUE}.dlq: recreated with the configured arguments, 0 message(s)" in out
    assert_replicated(cluster, cluster_vhost.name,
                      [RECORD_QUEUE, RECORD_QUEUE + ".dlq", RECORD_QUEUE + ".retry.200ms",
                       RECORD_QUEUE + ".retry.400ms"])

    recorder = container_factory(Recorder, quorum)
    recorder.start()
    wait_until(lambda: len(effects(quorum)) == 5, timeout=30, message="kept events handled")
    assert sorted(row.event_id for row in effects(quorum)) == sorted(waiting)


def test_an_event_expires_into_its_quorum_dlq_on_the_cluster(
        container_factory, cluster_config, cluster_vhost, cluster_plain, tmp_path, capsys):
    config = dict(cluster_config, QUEUE_TYPE="quorum",
                  EVENT_TTL={"note.created": 0.3, "user.registered": None})
    publisher = container_factory(TypedPublisher, config)
    publisher.start()
    with entrypoint_hook(publisher, "publish") as publish:
        expiring = publish("note.created", 1)
        lasting = publish("user.registered", 2)
    wait_until(lambda: unsent(config) == 0, message="both published")
    # nobody consumes: the note expires into the DLQ, the user event stays
    wait_until(lambda: cluster_plain.message_count(RECORD_QUEUE + ".dlq") == 1, timeout=20,
               message="expired event dead-lettered")
    assert_replicated(cluster_vhost.cluster, cluster_vhost.name, [RECORD_QUEUE + ".dlq"])
    knowledge_nest(["--config", write_config(tmp_path, config), "dlq", "list"])
    line = [row for row in capsys.readouterr().out.splitlines()
            if row.startswith(RECORD_QUEUE + ".dlq")][0]
    assert "1x expired" in line
    _, properties, _ = cluster_plain.get(RECORD_QUEUE + ".dlq")
    assert properties.message_id == expiring
    assert cluster_plain.message_count(RECORD_QUEUE) == 1
    _, properties, _ = cluster_plain.get(RECORD_QUEUE)
    assert properties.message_id == lasting


def test_confirmed_publisher_across_the_loss_of_a_quorum_queues_leader(cluster_vhost):
    """The outbox relay's publisher, connected to a follower, while the queue's leader dies: a
    batch is confirmed, or it fails (nacked, unconfirmed) and is published again; every
    confirmed message is in the queue, and confirms resume within seconds."""
    cluster = cluster_vhost.cluster
    queue = "kn.failover.probe"
    client = PlainClient(cluster.amqp_uri(cluster_vhost.name, nodes=cluster.nodes[:1]))
    client.channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    client.close()
    leader = cluster.leader(cluster_vhost.name, queue)
    followers = [node for node in cluster.nodes if node is not leader]
    publisher = ConfirmedPublisher(cluster.amqp_uri(cluster_vhost.name,
                                                    nodes=followers + [leader]),
                                   confirm_timeout=5)

    def batch(n):
        return [("", queue, event_message(b"{}", f"m{n}-{i}", "probe", "test"))
                for i in range(10)]

    confirmed = []
    for n in range(5):
        assert publisher.publish_batch(batch(n)) == []
        confirmed.append(n)
    leader.kill()
    killed_at, failures, resumed_after = time.monotonic(), 0, None
    n = 5
    while time.monotonic() - killed_at < 30 and len(confirmed) < 10:
        try:
            publisher.publish_batch(batch(n))
        except (PublishFailed, OSError, amqp.exceptions.AMQPError):
            failures += 1  # the relay leaves such a batch unsent and publishes it again
            eventlet.sleep(0.05)
        else:
            confirmed.append(n)
            if resumed_after is None:
                resumed_after = time.monotonic() - killed_at
        n += 1
    publisher.close()
    assert resumed_after is not None and resumed_after < 15, (resumed_after, failures)
    survivor = PlainClient(cluster.amqp_uri(cluster_vhost.name, nodes=followers[:1]))
    try:
        in_queue = {properties.message_id for _, properties, _ in survivor.get_all(queue)}
    finally:
        survivor.close()
    missing = {f"m{n}-{i}" for n in confirmed for i in range(10)} - in_queue
    assert not missing, missing
    print(f"confirms resumed {resumed_after:.2f}s after the leader's SIGKILL, "
          f"{failures} batch(es) failed meanwhile")

