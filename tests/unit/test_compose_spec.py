"""docker-compose.yml, the Dockerfile and .dockerignore as a deployer relies on them: valid against
the Compose Specification, images pinned, one image built once, every application container with
a healthcheck, the image installed from the wheel at the locked versions. Running the compose
deployment itself: tests/e2e/test_compose_run.py."""
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read(path):
    with open(os.path.join(ROOT, path)) as file:
        return file.read()


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(read("docker-compose.yml"))


def test_compose_file_is_valid_against_the_compose_specification():
    check = shutil.which("check-jsonschema", path=os.path.dirname(sys.executable))
    assert check, "check-jsonschema is a dev dependency (make install)"
    result = subprocess.run([check, "--builtin-schema", "vendor.compose-spec",
                             os.path.join(ROOT, "docker-compose.yml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_image_tag_is_pinned(compose):
    for name, service in compose["services"].items():
        image = service["image"]
        if image == "knowledge-nest:latest":
            continue  # ours, built here
        repository, _, tag = image.partition(":")
        assert re.fullmatch(r"v?\d+\.\d+(\.\d+)?(-[a-z]+)?", tag), f"{name}: {image} is not pinned"


def test_the_image_is_built_once(compose):
    built = [name for name, service in compose["services"].items() if "build" in service]
    assert built == ["migrate-auth"]
    assert compose["services"]["migrate-auth"]["image"] == "knowledge-nest:latest"


def test_every_long_running_application_container_has_a_healthcheck(compose):
    for name, service in compose["services"].items():
        if service["image"] != "knowledge-nest:latest" or service.get("restart") == "no":
            continue  # the broker's and PostgreSQL's are tested above; the one-shot migrations
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    gateway = compose["services"]["gateway"]
    assert "/health/live" in " ".join(gateway["healthcheck"]["test"])
    for name, condition in gateway["depends_on"].items():
        assert condition == {"condition": "service_healthy"}, name


def test_image_installs_the_wheel_at_the_locked_versions_and_keeps_env_out():
    dockerfile = read("Dockerfile")
    assert re.search(r"pip wheel .*--no-deps", dockerfile)
    assert re.search(r"pip install --constraint \S*constraints\.txt \S*\.whl", dockerfile)
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    assert "COPY services" not in final_stage  # only the installed package runs
    ignored = read(".dockerignore").splitlines()
    assert ignored[ignored.index("*")] == "*" and "!.env" not in ignored
    for needed in re.findall(r"^COPY (?!--)(.+) \S+$", dockerfile, re.M):
        for path in needed.split():
            assert f"!{path.rstrip('/')}" in ignored or f"!{path.rstrip('/')}/" in ignored, path
