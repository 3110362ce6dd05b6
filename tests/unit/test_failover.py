"""RABBITMQ_HOSTS: one failover AMQP_URI for every connection, and what it takes to try every
node of it (services/kit/amqp.py), and broker errors under an RPC call (services/kit/rpc.py)."""
import logging

import kombu.exceptions
import pytest
from kombu import Connection

from services.kit import amqp as kit_amqp
from services.kit.config import load_config
from services.kit.errors import ServiceUnavailable
from services.kit.rpc import TimedMethodProxy

HOSTS = "10.0.0.1:5672, 10.0.0.2:5673,10.0.0.3:5674"


def test_hosts_replace_the_host_and_port_keeping_credentials_and_vhost():
    config = {"AMQP_URI": "pyamqp://kn:s3cret@broker:5672/prod", "RABBITMQ_HOSTS": HOSTS}
    kit_amqp.apply_broker_hosts(config)
    assert config["AMQP_URI"] == (
        "pyamqp://kn:s3cret@10.0.0.1:5672/prod;pyamqp://kn:s3cret@10.0.0.2:5673/prod;"
        "pyamqp://kn:s3cret@10.0.0.3:5674/prod")
    assert kit_amqp.apply_broker_hosts(dict(config))["AMQP_URI"] == config["AMQP_URI"]
    connection = Connection(config["AMQP_URI"])
    assert [url.split("@")[1] for url in connection.alt] == [
        "10.0.0.1:5672/prod", "10.0.0.2:5673/prod", "10.0.0.3:5674/prod"]


def test_without_hosts_the_uri_is_left_alone():
    config = {"AMQP_URI": "pyamqp://guest:guest@localhost:5672/", "RABBITMQ_HOSTS": ""}
    assert kit_amqp.apply_broker_hosts(config)["AMQP_URI"] == "pyamqp://guest:guest@localhost:5672/"


def test_config_yml_takes_rabbitmq_hosts_from_the_environment(monkeypatch):
    monkeypatch.setenv("RABBITMQ_HOSTS", "127.0.0.1:5701,127.0.0.1:5702")
    monkeypatch.setenv("RABBITMQ_VHOST", "kn")
    config = load_config("config.yml")
    assert config["AMQP_URI"] == ("pyamqp://guest:guest@127.0.0.1:5701/kn;"
                                  "pyamqp://guest:guest@127.0.0.1:5702/kn")


def test_every_nodes_password_is_redacted():
    uri = kit_amqp.failover_uri("pyamqp://kn:s3cret@a:1/", ["a:1", "b:2", "c:3"])
    assert "s3cret" not in kit_amqp.sanitize_uri(uri)
    assert kit_amqp.sanitize_uri(uri).count("kn:********@") == 3


def test_the_reconnect_warning_names_no_password(caplog):
    from types import SimpleNamespace
    consumer = kit_amqp.QueueConsumer()
    consumer.container = SimpleNamespace(config={"AMQP_URI": kit_amqp.failover_uri(
        "pyamqp://kn:s3cret@a:1/", ["a:1", "b:2"])})
    with caplog.at_level(logging.WARNING):
        consumer.on_connection_error(ConnectionRefusedError(111, "refused"), 1)
    assert "b:2" in caplog.text and "s3cret" not in caplog.text


def test_connect_tries_every_node_once_per_round():
    # kombu counts a switch as a retry: max_retries=1 would try only two of three nodes
    uri = kit_amqp.failover_uri("pyamqp://guest:guest@x/", ["127.0.0.1:1", "127.0.0.1:2",
                                                            "127.0.0.1:3"])
    assert kit_amqp.connect_retries(uri) == 2
    assert kit_amqp.connect_retries(uri, rounds=2) == 5
    assert kit_amqp.connect_retries("pyamqp://guest:guest@x/") == 0
    tried = []
    connection = Connection(uri, connect_timeout=1)
    with pytest.raises(kombu.exceptions.OperationalError):
        connection.ensure_connection(
            errback=lambda exc, interval: tried.append(connection.port),
            max_retries=kit_amqp.connect_retries(uri), interval_start=0)
    assert tried + [connection.port] == [1, 2, 3]  # the last failure raises, no errback


@pytest.mark.parametrize("exc", [
    kombu.exceptions.OperationalError("[Errno 111] ECONNREFUSED"),
    ConnectionRefusedError(111, "Connection refused"),
])
def test_a_broker_error_under_an_rpc_call_is_service_unavailable(exc):
    proxy = TimedMethodProxy.__new__(TimedMethodProxy)  # no worker: _call is what fails
    proxy.service_name, proxy.method_name = "course", "enroll"

    def refuse(*args, **kwargs):
        raise exc

    proxy._call = refuse
    with pytest.raises(ServiceUnavailable, match="course.enroll: the broker is unavailable"):
        proxy(1, 3)


class RecordingConnection:
    """Stands in for the publisher's kombu connection: records how it was let go."""

    def __init__(self):
        self.let_go = []

    def collect(self):
        self.let_go.append("collect")

    def release(self):
        self.let_go.append("release")


def test_a_nacked_batch_fails_and_its_connection_is_dropped_without_a_close_handshake():
    # a channel that saw a nack goes on nacking for seconds after a leader's loss, and a clean
    # close blocks while a majority of the nodes is down: the publisher drops the socket
    publisher = kit_amqp.ConfirmedPublisher("pyamqp://guest:guest@127.0.0.1:1/",
                                            confirm_timeout=1)
    connection = RecordingConnection()
    publisher._connection, publisher._channel = connection, object()
    publisher._pending.add(1)  # published, then nacked
    publisher._on_nack(1, multiple=False)
    with pytest.raises(kit_amqp.PublishFailed, match="nacked 1"):
        publisher.wait_for((publisher._generation, 1, 1))
    assert connection.let_go == ["collect"]
    assert publisher._channel is None  # the next batch opens a new connection


def test_a_stopping_publisher_closes_cleanly():
    publisher = kit_amqp.ConfirmedPublisher("pyamqp://guest:guest@127.0.0.1:1/",
                                            confirm_timeout=1)
    connection = RecordingConnection()
    publisher._connection = connection
    publisher.close()
    assert connection.let_go == ["release"]
