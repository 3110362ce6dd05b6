"""`nameko run` of the gateway with unsafe settings: it stops at once, non-zero, in one line."""
import os
import sys

import pytest
from nameko.testing.utils import find_free_port

from tests.support.processes import run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMEKO = os.path.join(os.path.dirname(sys.executable), "nameko")
PLACEHOLDER = "change-me-to-48-random-characters-before-any-real-use"  # .env.example


@pytest.mark.parametrize("environment,secret,expected", [
    ("production", PLACEHOLDER, "placeholder"),
    ("production", "", "development default"),
    ("production", "dev-only-insecure-jwt-secret-CHANGE-ME", "development default"),
    ("production", "x" * 48, "entropy"),
    ("production", "short", "shorter than 32 bytes"),
    ("prod", "q8Zr0W3kd1P9sXvN4mYt7LbE2uHcJ6aF5gTiKoRz", "ENVIRONMENT is 'prod'"),
])
def test_nameko_run_refuses_to_start(environment, secret, expected, tmp_path):
    env = dict(os.environ, ENVIRONMENT=environment, JWT_SECRET=secret,
               WEB_SERVER_ADDRESS=f"127.0.0.1:{find_free_port()}")
    completed = run([NAMEKO, "run", "--config", "config.yml", "gateway.service"], cwd=ROOT,
                    env=env, timeout=60)
    assert completed.returncode == 1, (completed.stdout, completed.stderr)
    errors = [line for line in (completed.stdout + completed.stderr).splitlines()
              if line.startswith("Error:")]
    assert len(errors) == 1 and expected in errors[0], errors
    assert "Traceback" not in completed.stdout + completed.stderr
