"""scripts/check_test_services.py (what `make test` runs first): its decisions, with the broker,
its management API and PostgreSQL played by sockets of this test, and rabbitmq-server and
rabbitmq-plugins by stubs on PATH that record how they were called."""
import http.server
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "check_test_services.py")


class Listener:
    """A TCP port that accepts connections (a broker's or PostgreSQL's, as far as the script
    can tell), or a management API answering 200 on /api/overview (``http=True``)."""

    def __init__(self, http=False):
        self.http = http
        self.port = self._free_port()
        self.server = None

    @staticmethod
    def _free_port():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    def start(self):
        if self.http:
            class Overview(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    self.send_response(200 if self.path == "/api/overview" else 404)
                    self.end_headers()

                def log_message(self, *args):
                    pass
            self.server = http.server.HTTPServer(("127.0.0.1", self.port), Overview)
            threading.Thread(target=self.server.serve_forever, daemon=True).start()
        else:
            self.server = socket.socket()
            self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.server.bind(("127.0.0.1", self.port))
            self.server.listen(16)
        return self

    def start_when(self, path):
        """Start once ``path`` exists (a stub wrote its call there): the started piece coming up."""
        def wait():
            while not os.path.exists(path):
                time.sleep(0.05)
            self.start()
        threading.Thread(target=wait, daemon=True).start()
        return self

    def close(self):
        if self.http and self.server:
            self.server.shutdown()
            self.server.server_close()
        elif self.server:
            self.server.close()


@pytest.fixture
def machine(tmp_path):
    """Three pieces, all down; ``machine.run()`` runs the script against them."""
    class Machine:
        amqp, management, postgres = Listener(), Listener(http=True), Listener()
        bin = tmp_path / "bin"

        def stub(self, name):
            """A command on PATH that records its arguments in ``<name>.calls``."""
            calls = tmp_path / f"{name}.calls"
            script = self.bin / name
            script.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n')
            script.chmod(0o755)
            return calls

        def run(self):
            management = f"http://guest:guest@127.0.0.1:{self.management.port}"
            env = dict(os.environ, PATH=str(self.bin), KN_CHECK_WAIT="10",
                       KN_CHECK_AMQP_PORT=str(self.amqp.port), KN_CHECK_MANAGEMENT_URL=management,
                       TEST_POSTGRES_URL=f"postgresql://postgres@127.0.0.1:{self.postgres.port}/x")
            return subprocess.run([sys.executable, SCRIPT], env=env, capture_output=True,
                                  text=True, timeout=60)

    m = Machine()
    m.bin.mkdir()
    yield m
    for listener in (m.amqp, m.management, m.postgres):
        listener.close()


def test_all_up_runs_nothing_and_says_nothing(machine):
    server_calls, plugin_calls = machine.stub("rabbitmq-server"), machine.stub("rabbitmq-plugins")
    for listener in (machine.amqp, machine.management, machine.postgres):
        listener.start()
    result = machine.run()
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert not server_calls.exists() and not plugin_calls.exists()


def test_no_broker_installed_says_in_one_line_how_to_get_one(machine):
    machine.management.start()
    machine.postgres.start()
    result = machine.run()
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and f"no RabbitMQ broker on 127.0.0.1:{machine.amqp.port}" in lines[0]
    assert "apt-get install rabbitmq-server" in lines[0]


def test_a_stopped_broker_is_started(machine):
    calls = machine.stub("rabbitmq-server")
    machine.amqp.start_when(calls)
    machine.management.start_when(calls)
    machine.postgres.start()
    result = machine.run()
    assert result.returncode == 0, result.stderr
    assert calls.read_text().split() == ["-detached"]
    assert "rabbitmq-server -detached" in result.stdout


def test_the_management_plugin_is_enabled_when_off(machine):
    calls = machine.stub("rabbitmq-plugins")
    machine.amqp.start()
    machine.management.start_when(calls)
    machine.postgres.start()
    result = machine.run()
    assert result.returncode == 0, result.stderr
    assert calls.read_text().split() == ["enable", "rabbitmq_management"]


def test_management_plugin_unavailable_names_the_command(machine):
    machine.amqp.start()
    machine.postgres.start()
    result = machine.run()
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.endswith("run rabbitmq-plugins enable rabbitmq_management")


def test_no_postgres_says_what_to_run(machine):
    machine.amqp.start()
    machine.management.start()
    result = machine.run()  # no pg_ctlcluster on this PATH
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert f"no PostgreSQL on 127.0.0.1:{machine.postgres.port}" in line
    assert "TEST_POSTGRES_URL" in line
