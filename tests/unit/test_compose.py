"""docker-compose.yml read against the code: no Docker engine runs here, so this is how we keep it
honest. Every service module has a container, every variable the services read is set (or its
default is right inside a container), and every port is published on loopback only."""
import os
import re

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Tuning knobs whose config.yml defaults are as right in a container as on a laptop.
DEFAULTS_FINE_IN_CONTAINERS = {
    "RABBITMQ_VHOST", "RABBITMQ_HEARTBEAT", "MAX_WORKERS", "PREFETCH_COUNT", "EVENT_MAX_BATCH",
    "PUBLISH_CONFIRM_TIMEOUT", "EVENT_RETRY_DELAYS", "OUTBOX_POLL_INTERVAL", "OUTBOX_BATCH_SIZE",
    "OUTBOX_RETENTION", "INBOX_RETENTION", "RETENTION_INTERVAL", "RETENTION_BATCH_SIZE",
    "RPC_TIMEOUT", "SMTP_TIMEOUT", "MAIL_RETRY_INTERVAL", "MAIL_BATCH_DELAY", "MAIL_MAX_RETRY_DELAY",
    "MAIL_MAX_ATTEMPTS", "JWT_TTL_SECONDS", "MAX_BODY_BYTES",
    "LOGIN_FAILURE_WINDOW_SECONDS", "HEALTH_TIMEOUT", "LIVE_BUFFER", "LIVE_MAX_STREAMS",
    "PASSWORD_HASH_TIME_COST",
    "HTTP_IDLE_TIMEOUT", "HTTP_HEADER_TIMEOUT", "HTTP_BODY_TIMEOUT", "HTTP_SOCKET_TIMEOUT",
    "HTTP_MAX_CONNECTIONS_PER_CLIENT", "HTTP_MAX_CONNECTIONS",
    "LOGIN_FREE_FAILURES_PER_ADDRESS", "LOGIN_FREE_FAILURES_PER_ACCOUNT", "LOGIN_DELAY_BASE_SECONDS",
    "LOGIN_DELAY_MAX_SECONDS", "TRUSTED_PROXY_HOPS", "USER_CACHE_SECONDS",
    "LOGIN_MAX_CONCURRENT", "LOGIN_MAX_WAIT",
    # the owners' broker user names: their defaults are the users docker/rabbitmq defines
    "AUTH_RABBITMQ_USER", "COURSE_RABBITMQ_USER", "REVIEW_RABBITMQ_USER",
    "PASSWORD_HASH_MEMORY_COST", "PASSWORD_HASH_PARALLELISM", "PASSWORD_HASH_CONCURRENCY",
    "PASSWORD_HASH_QUEUE", "PASSWORD_HASH_MAX_WAIT", "DB_POOL_SIZE",
    "RABBITMQ_HOSTS",  # empty: the one broker of RABBITMQ_HOST; set it for a cluster
}


def read(path):
    with open(os.path.join(ROOT, path)) as file:
        return file.read()


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(read("docker-compose.yml"))


def service_modules():
    modules = {}
    for name in sorted(os.listdir(os.path.join(ROOT, "services"))):
        if os.path.isfile(os.path.join(ROOT, "services", name, "service.py")):
            modules[name] = f"services.{name}.service"
    if os.path.isfile(os.path.join(ROOT, "gateway", "service.py")):
        modules["gateway"] = "gateway.service"
    return modules


def test_broker_database_and_mail_catcher(compose):
    services = compose["services"]
    assert services["rabbitmq"]["image"] == "rabbitmq:3.10-management"
    assert set(services["rabbitmq"]["ports"]) == {"127.0.0.1:5672:5672", "127.0.0.1:15672:15672"}
    assert services["postgres"]["image"].startswith("postgres:")
    init_sql = read("docker/postgres-init.sql")
    for name in ("auth", "course", "review", "notification", "analytics"):
        assert f"CREATE DATABASE {name};" in init_sql
    assert "8025" in services["mailcatcher"]["ports"][0]
    for name in ("rabbitmq", "postgres"):
        assert "healthcheck" in services[name]


def test_every_service_module_runs_in_its_own_container(compose):
    modules = service_modules()
    assert modules, "no services yet"
    for name, module in modules.items():
        service = compose["services"][name]
        assert service["command"] == ["nameko", "run", "--config", "config.yml", module]
        assert service["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}
        assert service["image"] == "knowledge-nest:latest"


def test_each_database_is_migrated_once_before_its_service_starts(compose):
    for name in service_modules():
        if not os.path.isfile(os.path.join(ROOT, "services", name, "migrations", "env.py")):
            continue
        migration = compose["services"][f"migrate-{name}"]
        assert migration["command"] == ["knowledge-nest", "migrate", name]
        assert migration["restart"] == "no"
        assert compose["services"][name]["depends_on"][f"migrate-{name}"] == {
            "condition": "service_completed_successfully"}


def test_every_variable_the_services_read_is_set(compose):
    settings = "\n".join(line for line in read("config.yml").splitlines()
                         if not line.lstrip().startswith("#"))
    read_by_services = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", settings))
    for name in service_modules():
        environment = compose["services"][name]["environment"]
        missing = read_by_services - set(environment) - DEFAULTS_FINE_IN_CONTAINERS
        assert not missing, f"{name} does not set {sorted(missing)}"


def test_secrets_come_from_the_environment_and_ports_stay_on_loopback(compose):
    text = read("docker-compose.yml")
    for secret in ("RABBITMQ_PASS", "POSTGRES_PASSWORD", "JWT_SECRET"):
        assert re.search(r"\$\{" + secret + r"(:\?|\})", text), secret
    assert "guest" not in text and "password" not in text.replace("POSTGRES_PASSWORD", "")
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond the host"
    example = read(".env.example")
    for variable in ("RABBITMQ_USER", "RABBITMQ_PASS", "POSTGRES_USER", "POSTGRES_PASSWORD",
                     "JWT_SECRET"):
        assert re.search(rf"^{variable}=", example, re.M)


def test_image_runs_as_a_non_root_user():
    dockerfile = read("Dockerfile")
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")


def test_readme_shows_the_compose_commands():
    readme = read("README.md")
    assert "docker compose up" in readme
    assert "--scale notification=3" in readme
