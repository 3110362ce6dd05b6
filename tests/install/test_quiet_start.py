"""A quiet start: the installed ``knowledge-nest`` and nameko's own ``nameko run`` print no
eventlet or pkg_resources deprecation warning (services/__init__.py, knowledge_nest_quiet.pth).
``make run``'s output is checked in tests/e2e/test_make_run.py."""
import signal
import time
from urllib.parse import urlparse

import pytest

from tests.install.test_wheel import workdir_with_config
from tests.support import processes
from tests.support.broker import wait_until

pytestmark = pytest.mark.integration

NOISE = ("DeprecationWarning", "is deprecated", "pkg_resources")


def test_knowledge_nest_help_is_quiet(installed, tmp_path):
    result = processes.run([installed.command("knowledge-nest"), "--help"], cwd=tmp_path,
                           env=installed.env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "migrate" in result.stdout
    assert not [word for word in NOISE if word in result.stderr], result.stderr


def test_nameko_run_is_quiet(installed, tmp_path, rabbit_config):
    workdir = workdir_with_config(tmp_path)
    log_path = tmp_path / "nameko-run.log"
    env = installed.env(RABBITMQ_VHOST=urlparse(rabbit_config["AMQP_URI"]).path.lstrip("/"),
                        AUTH_DATABASE_URL=f"sqlite:///{tmp_path / 'auth.db'}")
    processes.run([installed.command("knowledge-nest"), "migrate", "auth"], cwd=workdir, env=env,
                  check=True, timeout=300)
    with open(log_path, "wb") as log:
        nameko = processes.Popen([installed.command("nameko"), "run", "--config", "config.yml",
                                  "services.auth.service"], cwd=workdir, env=env, stdout=log,
                                 stderr=processes.STDOUT)
    try:
        wait_until(lambda: "Connected to amqp://" in log_path.read_text() or nameko.poll(),
                   timeout=120, message="nameko run connecting")
        time.sleep(0.5)
    finally:
        nameko.send_signal(signal.SIGTERM)
        processes.wait(nameko, 60)
    output = log_path.read_text()
    assert "starting services: auth" in output, output
    assert not [word for word in NOISE if word in output], output
