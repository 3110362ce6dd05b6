"""``make run``: check the broker, migrate every database, then run every service in one process.

    python -m operations.runner --config config.yml

No broker answering on this machine's AMQP port: if ``rabbitmq-server`` is installed, it is
started (``rabbitmq-server -detached``) and stopped again when the suite stops; otherwise a
paragraph says how to get one.

Every service runs in one child ``nameko run`` process. Ctrl-C (SIGINT to the foreground process
group) stops them all gracefully (a second Ctrl-C kills them); SIGTERM to this process does the
same. This process waits for the child, so nothing is left running when it returns.
"""
import argparse
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from urllib.parse import urlparse

from kombu import Connection
from nameko.utils import sanitize_url

from services.kit.amqp import connect, sanitize_uri
from services.kit.config import load_config
from services.kit.settings import AMQP_URI, DB_URIS, WEB_SERVER_ADDRESS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NO_BROKER = """\
No RabbitMQ broker answers at {uri}.

KnowledgeNest needs one. Any of these gives you one on this machine:
  - it is installed but stopped:   rabbitmq-server -detached
  - with Docker:                   docker compose up -d rabbitmq
  - on Debian/Ubuntu:              sudo apt-get install rabbitmq-server
Elsewhere, point RABBITMQ_HOST, RABBITMQ_PORT, RABBITMQ_USER and RABBITMQ_PASS at yours.
"""

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
BROKER_START_TIMEOUT = 120  # seconds; a cold RabbitMQ on a small machine takes 10-30


BANNER = """\
Starting {modules}
  API:            http://{api}  (health: http://{api}/health)
  RabbitMQ UI:    http://{management}:15672  (if its management plugin is enabled)
  databases:      {databases}
  metrics:        http://{api}/metrics  (Prometheus)
  logs:           below, one line each: time, level, service, [logger], message, call_id and
                  event_id (LOG_FORMAT=json for JSON lines); Ctrl-C stops everything
"""


def service_modules():
    """Every service's module: services/<name>/service.py, and the gateway's."""
    paths = sorted(glob.glob(os.path.join(ROOT, "services", "*", "service.py")))
    paths += glob.glob(os.path.join(ROOT, "gateway", "service.py"))
    return [os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".") for path in paths]


def broker_answers(amqp_uri):
    try:
        with Connection(amqp_uri, connect_timeout=3) as connection:
            connect(connection, rounds=2)
        return True
    except Exception:
        return False


def start_local_broker(amqp_uri, timeout=BROKER_START_TIMEOUT):
    """Start this machine's RabbitMQ if the broker should be local and it is installed.

    Returns True once it answers; False when it cannot be started here.
    """
    if urlparse(amqp_uri).hostname not in LOCAL_HOSTS or not shutil.which("rabbitmq-server"):
        return False
    print("No RabbitMQ broker answers; starting this machine's: rabbitmq-server -detached",
          flush=True)
    if subprocess.call(["rabbitmq-server", "-detached"]) != 0:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broker_answers(amqp_uri):
            print("RabbitMQ is up (it is stopped again when the suite stops).", flush=True)
            return True
        time.sleep(1)
    print(f"RabbitMQ did not answer within {timeout}s of starting it.", file=sys.stderr)
    stop_local_broker()
    return False


def stop_local_broker():
    if shutil.which("rabbitmqctl"):
        print("Stopping the RabbitMQ broker make run started (rabbitmqctl stop).", flush=True)
        subprocess.call(["rabbitmqctl", "stop"], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)


def run_services(nameko, config_path, modules):
    """Run ``nameko run`` as a child in this process group; return its exit status.

    Ctrl-C reaches the child from the terminal (the whole foreground group gets SIGINT), so
    here SIGINT is only noted; SIGTERM sent to this process alone is passed on.
    """
    child = None

    def forward(signum, frame):
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {signal.SIGINT: signal.signal(signal.SIGINT, lambda signum, frame: None),
                signal.SIGTERM: signal.signal(signal.SIGTERM, forward)}
    try:
        child = subprocess.Popen([nameko, "run", "--config", config_path, *modules])
        while True:
            try:
                return child.wait()
            except InterruptedError:  # pragma: no cover (PEP 475 retries for us)
                continue
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="config.yml")
    args = parser.parse_args(argv)
    config = load_config(args.config)

    amqp_uri = AMQP_URI.read(config)
    started_broker = False
    if not broker_answers(amqp_uri):
        started_broker = start_local_broker(amqp_uri)
        if not started_broker:
            print(NO_BROKER.format(uri=sanitize_uri(amqp_uri)), file=sys.stderr)
            return 1
    try:
        return run_suite(args.config, config)
    finally:
        if started_broker:
            stop_local_broker()


def run_suite(config_path, config):
    amqp_uri = AMQP_URI.read(config)

    from operations.cli import main as knowledge_nest
    knowledge_nest(["--config", config_path, "migrate"])

    modules = service_modules()
    if not modules:
        print("no services to run yet", file=sys.stderr)
        return 1
    nameko = os.path.join(os.path.dirname(sys.executable), "nameko")
    print(BANNER.format(
        modules=", ".join(modules),
        api=WEB_SERVER_ADDRESS.read(config),
        management=urlparse(amqp_uri).hostname or "localhost",
        databases=", ".join(sorted(set(
            sanitize_url(uri) for uri in DB_URIS.read(config).values())))), flush=True)
    status = run_services(nameko, config_path, modules)
    if status in (0, -signal.SIGINT):
        print(f"Stopped {', '.join(modules)}.", flush=True)
        return 0
    print(f"nameko run exited with status {status}: see its log above.", file=sys.stderr)
    return status if status > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
