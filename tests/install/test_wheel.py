"""The wheel a user installs: it carries every file the services read at run time, and its
``knowledge-nest migrate``, run from a directory that is not the checkout, makes every service's
tables on SQLite and on PostgreSQL."""
import os
import re
import sqlite3
import zipfile
from urllib.parse import urlparse

import pg8000.native
import pytest

from tests.install.conftest import ROOT
from tests.support import processes

pytestmark = pytest.mark.integration

SERVICES = ("auth", "course", "review", "notification", "analytics")


def shipped_sources():
    """Every file of services/, gateway/ and operations/ in the checkout a running service or
    the knowledge-nest command may read."""
    listed = processes.run(["git", "ls-files", "services", "gateway", "operations"], cwd=ROOT,
                           check=True)
    return {path for path in listed.stdout.split() if os.path.isfile(os.path.join(ROOT, path))}


def expected_tables(service):
    import importlib
    models = importlib.import_module(f"services.{service}.models")
    return set(models.Base.metadata.tables) | {"alembic_version"}


def test_the_wheel_has_every_file_of_the_package_and_building_it_warns_of_nothing(installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    missing = shipped_sources() - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    for service in SERVICES:  # what the issue found missing, named
        assert f"services/{service}/migrations/env.py" in names
        assert f"services/{service}/migrations/script.py.mako" in names
        assert any(re.fullmatch(rf"services/{service}/migrations/versions/\w+\.py", name)
                   for name in names)
    assert {"gateway/static/dashboard.html", "services/auth/common_passwords.txt",
            "knowledge_nest_quiet.pth"} <= names
    assert "is absent from the `packages` configuration" not in installed.build_log


def workdir_with_config(tmp_path):
    """A directory like the image's /app: config.yml, var/, and nothing of the source tree."""
    workdir = tmp_path / "elsewhere"
    (workdir / "var").mkdir(parents=True)
    with open(os.path.join(ROOT, "config.yml")) as source:
        (workdir / "config.yml").write_text(source.read())
    return workdir


def tables_in(url):
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///"):]) as connection:
            return {row[0] for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
    parts = urlparse(url)
    connection = pg8000.native.Connection(user=parts.username or "postgres",
                                          password=parts.password, host=parts.hostname,
                                          port=parts.port or 5432, database=parts.path[1:])
    try:
        return {row[0] for row in connection.run(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    finally:
        connection.close()


def test_installed_migrate_makes_every_services_tables(installed, tmp_path, database_backend,
                                                       make_database_url):
    workdir = workdir_with_config(tmp_path)
    urls = {service: make_database_url(database_backend) for service in SERVICES}
    env = installed.env(**{f"{service.upper()}_DATABASE_URL": url for service, url in urls.items()})
    result = processes.run([installed.command("knowledge-nest"), "migrate"], cwd=workdir, env=env,
                           timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [f"{service}: database at head" for service in SERVICES]
    assert "Warning" not in result.stderr, result.stderr  # the quiet start (services/__init__.py)
    for service, url in urls.items():
        assert expected_tables(service) <= tables_in(url), service
    assert not os.path.exists(workdir / "services")


def test_installed_migrate_refuses_a_service_without_migrations(installed, tmp_path):
    workdir = workdir_with_config(tmp_path)
    auth_db = tmp_path / "auth.db"
    (workdir / "config.yml").write_text(
        "DB_URIS:\n"
        f"  auth:Base: sqlite:///{auth_db}\n"
        f"  payments:Base: sqlite:///{tmp_path / 'payments.db'}\n")
    result = processes.run([installed.command("knowledge-nest"), "migrate"], cwd=workdir,
                           env=installed.env(), timeout=300)
    assert result.returncode != 0
    [line] = result.stderr.splitlines()
    assert line.startswith("error: payments: no migrations at ")
    assert not auth_db.exists()  # stopped before migrating anything
