"""operations/runner.py (``make run``) without a broker: what it does when none answers."""
import os
import stat

import pytest
from nameko.testing.utils import find_free_port

from operations import runner


def fake_command(directory, name, script):
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def no_broker_config(tmp_path, monkeypatch):
    """config.yml pointing at a local port where nothing listens."""
    monkeypatch.setenv("RABBITMQ_PORT", str(find_free_port()))
    monkeypatch.setenv("RABBITMQ_HOST", "127.0.0.1")
    return os.path.join(runner.ROOT, "config.yml")


def test_without_a_broker_or_rabbitmq_server_it_says_how_to_get_one(
        no_broker_config, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no rabbitmq-server here
    assert runner.main(["--config", no_broker_config]) == 1
    err = capsys.readouterr().err
    assert "No RabbitMQ broker answers at pyamqp://guest:********@127.0.0.1:" in err
    assert "docker compose up -d rabbitmq" in err
    assert "rabbitmq-server -detached" in err


def test_an_installed_rabbitmq_server_is_started_waited_for_and_stopped_again(
        no_broker_config, tmp_path, monkeypatch, capsys):
    calls = tmp_path / "calls"
    fake_command(tmp_path, "rabbitmq-server", f'echo "rabbitmq-server $*" >> {calls}\n')
    fake_command(tmp_path, "rabbitmqctl", f'echo "rabbitmqctl $*" >> {calls}\n')
    monkeypatch.setenv("PATH", str(tmp_path))
    answers = iter([False, False, True])  # not before the start; up on the second poll
    monkeypatch.setattr(runner, "broker_answers", lambda uri: next(answers))
    monkeypatch.setattr(runner.time, "sleep", lambda seconds: None)
    ran = []
    monkeypatch.setattr(runner, "run_suite", lambda path, config: ran.append(path) or 0)

    assert runner.main(["--config", no_broker_config]) == 0
    assert ran == [no_broker_config]
    assert calls.read_text().splitlines() == ["rabbitmq-server -detached", "rabbitmqctl stop"]
    assert "RabbitMQ is up" in capsys.readouterr().out


def test_a_remote_broker_is_never_started_here(tmp_path, monkeypatch):
    calls = tmp_path / "calls"
    fake_command(tmp_path, "rabbitmq-server", f'echo "rabbitmq-server $*" >> {calls}\n')
    monkeypatch.setenv("PATH", str(tmp_path))
    assert runner.start_local_broker("pyamqp://guest:guest@broker.example:5672/") is False
    assert not calls.exists()
