# nameko 2.14's pytest plugin no longer monkey-patches: do it before anything imports a socket.
import eventlet
eventlet.monkey_patch()  # noqa: E402

import os  # noqa: E402
import uuid  # noqa: E402
from urllib.parse import urlparse  # noqa: E402

import pytest  # noqa: E402

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DATABASE_BACKENDS = ("sqlite", "postgresql")
# config.yml's routing contract: the suite's services declare every subscription up front
ROUTING_CONTRACT = "contracts.subscriptions:SUBSCRIPTIONS"
EVENT_OWNERS = "contracts.events:OWNERS"


def _admin_connection():
    import pg8000.native
    url = urlparse(POSTGRES_URL)
    return pg8000.native.Connection(user=url.username or "postgres", password=url.password,
                                    host=url.hostname or "127.0.0.1", port=url.port or 5432,
                                    database=url.path.lstrip("/") or "postgres")


@pytest.fixture
def make_database_url(request, tmp_path):
    """``make_database_url(backend)``: a new empty database, dropped after the test.

    PostgreSQL databases are named ``kn_test_<random>`` on the machine's server.
    """
    created = []

    def make(backend):
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / uuid.uuid4().hex}.db"
        name = f"kn_test_{uuid.uuid4().hex[:12]}"
        connection = _admin_connection()
        try:
            connection.run(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        created.append(name)
        return POSTGRES_URL.rsplit("/", 1)[0] + "/" + name

    yield make

    for name in created:
        connection = _admin_connection()
        try:
            connection.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            connection.close()


@pytest.fixture(params=DATABASE_BACKENDS)
def database_backend(request):
    """Runs a test once on SQLite and once on PostgreSQL."""
    return request.param


@pytest.fixture
def make_service_database(make_database_url):
    """``make_service_database(service, backend)``: a new database migrated to head with the
    service's own Alembic history (the production path: no create_all)."""
    from services.kit.migrations import upgrade

    def make(service_name, backend):
        url = make_database_url(backend)
        upgrade(service_name, url)
        return url

    return make


@pytest.fixture
def services_config(rabbit_config, make_service_database, database_backend):
    """``services_config("auth", "course")``: nameko config to run those services for real: the
    test's own vhost, each service's own migrated database (on this test's backend), short
    retry delays and timeouts."""

    def make(*service_names, **overrides):
        db_uris = {f"{name}:Base": make_service_database(name, database_backend)
                   for name in service_names}
        config = dict(rabbit_config, DB_URIS=db_uris, EVENT_RETRY_DELAYS=[0.2, 0.5],
                      OUTBOX_POLL_INTERVAL=0.5, RPC_TIMEOUT=10, HEARTBEAT=5,
                      SUBSCRIPTIONS=ROUTING_CONTRACT, EVENT_OWNERS=EVENT_OWNERS)
        config.update(overrides)
        return config

    return make


@pytest.fixture
def plain(rabbit_config):
    """A plain AMQP client (pika, as the seed uses) on this test's vhost."""
    from tests.support.broker import PlainClient
    client = PlainClient(rabbit_config["AMQP_URI"])
    yield client
    client.close()


@pytest.fixture
def broker_proxy(container_factory, rabbit_config):
    """A TCP proxy between the services under test and the broker (``.amqp_uri`` goes through it).

    ``cut()`` takes the broker away from them alone, leaving the machine's shared broker up. Torn
    down before the containers (it depends on container_factory): it restores the link, so that
    they can stop cleanly.
    """
    from tests.support.proxy import TcpProxy
    proxy = TcpProxy("127.0.0.1", 5672)
    url = urlparse(rabbit_config["AMQP_URI"])
    proxy.amqp_uri = url._replace(
        netloc=f"{url.username}:{url.password}@127.0.0.1:{proxy.port}").geturl()
    yield proxy
    proxy.restore()


@pytest.fixture(scope="session")
def rabbit_cluster(tmp_path_factory):
    """Three RabbitMQ nodes joined into one cluster beside the machine's broker, which they
    never touch (tests/support/cluster.py); started once per session, when a test first asks
    for it (~25-30 s), and stopped and removed at its end."""
    from tests.support.cluster import RABBITMQ_BIN, Cluster
    if not os.path.exists(os.path.join(RABBITMQ_BIN, "rabbitmq-server")):
        pytest.skip(f"no RabbitMQ server scripts in {RABBITMQ_BIN} to start a test cluster with")
    cluster = Cluster.in_free_slot(str(tmp_path_factory.mktemp("rabbit-cluster")))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_vhost(rabbit_cluster):
    """A vhost of this test on the cluster; afterwards every node is running again and the
    vhost is gone. ``.amqp_uri``: the failover URI of the three nodes."""
    import types
    name = f"kn_test_{uuid.uuid4().hex[:12]}"
    rabbit_cluster.add_vhost(name)
    yield types.SimpleNamespace(name=name, amqp_uri=rabbit_cluster.amqp_uri(name),
                                cluster=rabbit_cluster)
    for node in rabbit_cluster.nodes:
        if not node.running():
            node.start()
        elif node.app_stopped:
            node.start_app()
    rabbit_cluster.await_online()
    rabbit_cluster.delete_vhost(name)
