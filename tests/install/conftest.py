"""The package as a user installs it: a wheel built from this checkout, installed into a fresh
virtual environment outside the source tree, once per test session.

The wheel is built from a copy of the checkout's files (tracked and not ignored), so that neither
a stale build/ directory nor anything untracked can slip into it; its dependencies come at the
versions in constraints.txt, from pip's cache where it has them.
"""
import os
import shutil
import sys

import pytest

from tests.support import processes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Installed:
    def __init__(self, prefix, wheel, build_log):
        self.prefix = prefix
        self.bin = os.path.join(prefix, "bin")
        self.wheel = wheel
        self.build_log = build_log

    def command(self, name):
        return os.path.join(self.bin, name)

    def env(self, **overrides):
        """The environment a user of this venv has: its bin first on PATH, none of the test
        process's Python settings."""
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("PYTHON", "VIRTUAL_ENV", "PYTEST"))}
        env["PATH"] = self.bin + os.pathsep + env.get("PATH", "")
        env["VIRTUAL_ENV"] = self.prefix
        env.update(overrides)
        return env


def copy_checkout(destination):
    listed = processes.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, check=True).stdout
    for path in filter(None, listed.split("\0")):
        source = os.path.join(ROOT, path)
        if os.path.isfile(source):  # listed but deleted in the work tree: not shipped
            target = os.path.join(destination, path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(source, target)


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("installed")
    source, wheels, prefix = base / "source", base / "wheels", base / "venv"
    copy_checkout(source)
    build = processes.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "--wheel-dir",
                           str(wheels), "."], cwd=source, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    [wheel] = wheels.glob("knowledge_nest-*.whl")
    # without pip of its own (ensurepip alone takes ~10 s): this pip installs into it
    processes.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True,
                  timeout=300)
    python = str(prefix / "bin" / "python")
    install = processes.run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
                             "--disable-pip-version-check", "--constraint",
                             os.path.join(ROOT, "constraints.txt"), str(wheel)],
                            cwd=base, timeout=600)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    shutil.rmtree(source)  # nothing of the checkout is left to import from by accident
    return Installed(str(prefix), str(wheel), build.stdout + build.stderr)
