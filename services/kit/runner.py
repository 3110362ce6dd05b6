"""``make run``: check the broker, migrate every database, then run every service in one process.

    python -m services.kit.runner --config config.yml

Ctrl-C stops them all (nameko's runner stops each service gracefully).
"""
import argparse
import glob
import os
import sys
from urllib.parse import urlparse

from kombu import Connection
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.utils import sanitize_url

from services.kit.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NO_BROKER = """\
No RabbitMQ broker answers at {uri}.

KnowledgeNest needs one. Any of these gives you one on this machine:
  - it is installed but stopped:   rabbitmq-server -detached
  - with Docker:                   docker compose up -d rabbitmq
  - on Debian/Ubuntu:              sudo apt-get install rabbitmq-server
Elsewhere, point RABBITMQ_HOST, RABBITMQ_PORT, RABBITMQ_USER and RABBITMQ_PASS at yours.
"""


BANNER = """\
Starting {modules}
  API:            http://{api}  (health: http://{api}/health)
  RabbitMQ UI:    http://{management}:15672  (if its management plugin is enabled)
  databases:      {databases}
  logs:           below, one line each, "[logger] message"; Ctrl-C stops everything
"""


def service_modules():
    """Every service's module: services/<name>/service.py, and the gateway's."""
    paths = sorted(glob.glob(os.path.join(ROOT, "services", "*", "service.py")))
    paths += glob.glob(os.path.join(ROOT, "gateway", "service.py"))
    return [os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".") for path in paths]


def broker_answers(amqp_uri):
    try:
        with Connection(amqp_uri, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="config.yml")
    args = parser.parse_args(argv)
    config = load_config(args.config)

    if not broker_answers(config[AMQP_URI_CONFIG_KEY]):
        print(NO_BROKER.format(uri=sanitize_url(config[AMQP_URI_CONFIG_KEY])), file=sys.stderr)
        return 1

    from services.kit.cli import main as knowledge_nest
    knowledge_nest(["--config", args.config, "migrate"])

    modules = service_modules()
    if not modules:
        print("no services to run yet", file=sys.stderr)
        return 1
    nameko = os.path.join(os.path.dirname(sys.executable), "nameko")
    print(BANNER.format(
        modules=", ".join(modules),
        api=config.get("WEB_SERVER_ADDRESS", "127.0.0.1:8000"),
        management=urlparse(config[AMQP_URI_CONFIG_KEY]).hostname or "localhost",
        databases=", ".join(sorted(set(
            sanitize_url(uri) for uri in config.get("DB_URIS", {}).values())))), flush=True)
    os.execv(nameko, [nameko, "run", "--config", args.config, *modules])


if __name__ == "__main__":
    sys.exit(main())
