"""``make run`` on a fresh clone: the suite comes up, answers over HTTP, and Ctrl-C leaves nothing.

The clone is of this checkout's HEAD; it runs with this test's own vhost and port, and either the
defaults' SQLite files (``var/*.db`` in the clone: nothing to set up) or PostgreSQL databases of
its own (the README's ``*_DATABASE_URL`` way).
It uses the venv the tests run in (``VENV=``) and ``make -o <venv>/.installed`` so that the
clone's ``make`` never reinstalls itself into that shared venv (an editable install from the
clone would repoint it at a temporary directory).
"""
import os
import signal
import sys
import time
from urllib.parse import urlparse

import pytest
import requests
from nameko.testing.utils import find_free_port

from tests.support import processes
from tests.support.broker import wait_until

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PASSWORD = "correct horse battery staple"
SERVICES = ("auth", "course", "review", "notification", "analytics")


def processes_in_group(pgid):
    """Live (not zombie) processes whose process group is ``pgid``: [(pid, command)]."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat_file:
                stat = stat_file.read()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline_file:
                command = cmdline_file.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # it ended meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append((int(entry), command))
    return found


@pytest.fixture
def clone(tmp_path):
    path = tmp_path / "knowledge-nest"
    processes.run(["git", "clone", "--quiet", ROOT, str(path)], check=True, timeout=120)
    return path


def test_make_run_serves_the_suite_and_ctrl_c_stops_every_process(
        clone, tmp_path, rabbit_config, database_backend, make_database_url):
    venv = sys.prefix
    assert os.path.exists(os.path.join(venv, "bin", "nameko")), "tests must run in the venv"
    port = find_free_port()
    env = dict(os.environ,
               RABBITMQ_VHOST=urlparse(rabbit_config["AMQP_URI"]).path.lstrip("/"),
               WEB_SERVER_ADDRESS=f"127.0.0.1:{port}",
               JWT_SECRET="make-run-test-secret-0123456789-0123456789",
               PASSWORD_HASH_TIME_COST="1", PASSWORD_HASH_MEMORY_COST="1024",
               PASSWORD_HASH_PARALLELISM="1", MAIL_BACKEND="log", MAIL_RETRY_INTERVAL="0.5",
               HEALTH_TIMEOUT="5", LOG_FORMAT="plain", LOG_LEVEL="INFO")
    for name in SERVICES:
        env.pop(f"{name.upper()}_DATABASE_URL", None)  # sqlite: the defaults, var/<name>.db
        if database_backend == "postgresql":
            env[f"{name.upper()}_DATABASE_URL"] = make_database_url("postgresql")
    log_path = tmp_path / "make-run.log"
    with open(log_path, "wb") as log_file:
        make = processes.Popen(
            ["make", "-o", os.path.join(venv, ".installed"), "run", f"VENV={venv}"],
            cwd=clone, env=env, stdout=log_file, stderr=processes.STDOUT,
            start_new_session=True)  # its own process group, as in a terminal
    pgid = make.pid
    base = f"http://127.0.0.1:{port}"

    def output():
        return log_path.read_text(errors="replace")

    try:
        def healthy():
            assert make.poll() is None, f"make run exited early:\n{output()}"
            try:
                return requests.get(base + "/health", timeout=10).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(healthy, timeout=180, interval=0.5, message="make run answering /health")
        assert f"API:            http://127.0.0.1:{port}" in output()
        assert f"databases:      {database_backend}" in output()

        response = requests.post(base + "/api/auth/register", timeout=60, json={
            "email": "make-run@example.com", "password": PASSWORD, "name": "Make Run"})
        assert response.status_code == 201, response.text
        response = requests.post(base + "/api/auth/login", timeout=60, json={
            "email": "make-run@example.com", "password": PASSWORD})
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]

        def welcome():
            response = requests.get(base + "/api/users/me/notifications", timeout=60,
                                    headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
            return [item for item in response.json()["items"] if item["kind"] == "welcome"]

        assert wait_until(welcome, timeout=60, interval=0.5, message="the welcome notification")

        # one process: the gateway's /metrics has every service's (here notification's)
        metrics = requests.get(base + "/metrics", timeout=60).text
        assert 'knowledge_nest_events_handled_total{event_type="user.registered",' \
            'queue="notification.' in metrics

        # The log says which service said what, and ties auth's line to the HTTP request.
        def auth_logged():
            return [line for line in output().splitlines()
                    if " auth [services.auth." in line and "origin=gateway.register." in line]

        assert wait_until(auth_logged, timeout=30, interval=0.5, message="auth's log line")
        # the mail sender's line ("... sent to ..."), which comes MAIL_BATCH_DELAY after the commit
        assert wait_until(lambda: " notification [services.notification." in output(),
                          timeout=30, interval=0.2, message="notification's own log line"), \
            output()[-6000:]

        # a quiet start: no eventlet or pkg_resources deprecation warning (services/__init__.py)
        assert "DeprecationWarning" not in output() and "pkg_resources" not in output()

        suite = processes_in_group(pgid)
        assert any("nameko run" in command for _, command in suite), suite

        os.killpg(pgid, signal.SIGINT)  # Ctrl-C in the terminal
        processes.wait(make, timeout=120)
        deadline = time.monotonic() + 30
        while processes_in_group(pgid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert processes_in_group(pgid) == [], output()
        stopped = [line for line in output().splitlines() if line.startswith("Stopped ")]
        assert stopped, output()
        for name in SERVICES:
            assert f"services.{name}.service" in stopped[-1]
        if database_backend == "sqlite":
            assert {f"{name}.db" for name in SERVICES} <= set(os.listdir(clone / "var"))
    finally:
        if processes_in_group(pgid):
            os.killpg(pgid, signal.SIGKILL)
        if make.poll() is None:
            processes.wait(make, timeout=30)
