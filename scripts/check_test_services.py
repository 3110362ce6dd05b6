"""Before ``make test``: RabbitMQ, its management API and PostgreSQL must answer.

    python scripts/check_test_services.py

What this machine has installed but not running is started or enabled (``rabbitmq-server
-detached``, ``rabbitmq-plugins enable rabbitmq_management``, ``pg_ctlcluster <version> main
start``); what it lacks is named in one line saying what to run, and the exit status is 1.
Standard library only: it runs before anything else is known to work.

Where to look: the addresses nameko's pytest plugin uses by default (AMQP on localhost:5672, the
management API on localhost:15672 as guest/guest) and TEST_POSTGRES_URL (tests/conftest.py).
KN_CHECK_AMQP_PORT, KN_CHECK_MANAGEMENT_URL and KN_CHECK_WAIT (seconds to wait for a started
piece) exist for this script's own tests.
"""
import base64
import glob
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlparse

AMQP = ("127.0.0.1", int(os.environ.get("KN_CHECK_AMQP_PORT", "5672")))
MANAGEMENT_URL = os.environ.get("KN_CHECK_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
POSTGRES_URL = urlparse(os.environ.get("TEST_POSTGRES_URL",
                                       "postgresql://postgres@127.0.0.1:5432/postgres"))
POSTGRES = (POSTGRES_URL.hostname or "127.0.0.1", POSTGRES_URL.port or 5432)
WAIT = float(os.environ.get("KN_CHECK_WAIT", "90"))


def port_answers(address):
    try:
        socket.create_connection(address, timeout=2).close()
        return True
    except OSError:
        return False


def management_answers():
    url = urlparse(MANAGEMENT_URL)
    request = urllib.request.Request(f"{url.scheme}://{url.hostname}:{url.port}/api/overview")
    credentials = f"{url.username or 'guest'}:{url.password or 'guest'}".encode()
    request.add_header("Authorization", "Basic " + base64.b64encode(credentials).decode())
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


def wait_for(check):
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def run(*command):
    print("make test: " + " ".join(command), flush=True)
    return subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT).returncode


def postgres_clusters():
    """This machine's Debian PostgreSQL clusters' versions (pg_ctlcluster's first argument)."""
    return sorted(os.path.basename(path) for path in glob.glob("/etc/postgresql/*")
                  if os.path.isdir(os.path.join(path, "main")))


def check_broker():
    if port_answers(AMQP):
        return None
    if shutil.which("rabbitmq-server"):
        run("rabbitmq-server", "-detached")
        if wait_for(lambda: port_answers(AMQP)):
            return None
        return (f"RabbitMQ did not come up on {AMQP[0]}:{AMQP[1]} after rabbitmq-server "
                f"-detached: see its log under /var/log/rabbitmq")
    return (f"no RabbitMQ broker on {AMQP[0]}:{AMQP[1]}: install one "
            f"(sudo apt-get install rabbitmq-server) or run: docker compose up -d rabbitmq")


def check_management():
    if management_answers():
        return None
    if shutil.which("rabbitmq-plugins"):
        run("rabbitmq-plugins", "enable", "rabbitmq_management")
        if wait_for(management_answers):
            return None
    return (f"RabbitMQ's management API does not answer at {MANAGEMENT_URL.split('@')[-1]} "
            f"(nameko's test fixtures make a vhost per test through it): run "
            f"rabbitmq-plugins enable rabbitmq_management")


def check_postgres():
    if port_answers(POSTGRES):
        return None
    local = POSTGRES[0] in ("127.0.0.1", "localhost", "::1")
    versions = postgres_clusters() if local and shutil.which("pg_ctlcluster") else []
    if versions:
        run("pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start")
        if wait_for(lambda: port_answers(POSTGRES)):
            return None
    return (f"no PostgreSQL on {POSTGRES[0]}:{POSTGRES[1]}: install and start one (sudo apt-get "
            f"install postgresql), or set TEST_POSTGRES_URL to a server the tests may create "
            f"databases on")


def main():
    problem = check_broker() or check_management() or check_postgres()
    if problem:
        print(f"make test: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
