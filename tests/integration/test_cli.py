"""knowledge-nest dlq against the real broker: JSON output, pipelined requeue with progress on a
pseudo-terminal and on a pipe."""
import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import uuid
from pathlib import Path

import pika
import pytest
import yaml

from tests.support.broker import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "cli.parked"
PARKED = 500


@pytest.fixture
def cli_config(rabbit_config, tmp_path):
    config = {"AMQP_URI": rabbit_config["AMQP_URI"], "EXTRA_SUBSCRIPTIONS": {QUEUE: ["cli.*"]}}
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    result = knowledge_nest(path, "declare")
    assert result.returncode == 0, result.stderr
    return path


def knowledge_nest(config_path, *args):
    return subprocess.run([sys.executable, "-m", "operations.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, KN_CONFIG=str(config_path)))


def park(plain, count):
    """``count`` events parked in the DLQ as the kit parks them; returns their event ids."""
    plain.channel.confirm_delivery()
    ids = []
    for n in range(count):
        event_id = uuid.uuid4().hex
        body = json.dumps({"event_id": event_id, "event_type": "cli.test", "data": {"n": n}})
        plain.channel.basic_publish("", QUEUE + ".dlq", body, pika.BasicProperties(
            delivery_mode=2, message_id=event_id, type="cli.test",
            headers={"x-dead-letter-reason": "RuntimeError: not today", "x-attempts": 3,
                     "x-original-queue": QUEUE}))
        ids.append(event_id)
    return ids


def test_dlq_list_and_show_as_json(cli_config, plain):
    ids = park(plain, 3)
    result = knowledge_nest(cli_config, "dlq", "list", "--json")
    assert result.returncode == 0, result.stderr
    [row] = [row for row in json.loads(result.stdout) if row["queue"] == QUEUE + ".dlq"]
    assert row["count"] == 3 and row["reasons"] == {"RuntimeError: not today": 3}

    result = knowledge_nest(cli_config, "dlq", "show", "--queue", QUEUE, "--json")
    shown = json.loads(result.stdout)
    assert [message["event_id"] for message in shown] == ids
    assert shown[0]["attempts"] == 3 and json.loads(shown[0]["body"])["data"] == {"n": 0}
    result = knowledge_nest(cli_config, "dlq", "show", "--event-id", ids[1])
    assert ids[1] in result.stdout and ids[0] not in result.stdout
    assert "reason:    RuntimeError: not today" in result.stdout
    assert plain.message_count(QUEUE + ".dlq") == 3  # nothing taken


def test_requeue_on_a_pipe_prints_counts_and_moves_every_message(cli_config, plain):
    ids = park(plain, PARKED)
    result = knowledge_nest(cli_config, "dlq", "requeue", "--all")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"requeued {PARKED} message(s)\n"
    assert f"{QUEUE}.dlq: {PARKED}/{PARKED}" in result.stderr.splitlines()
    assert "\r" not in result.stderr
    assert plain.message_count(QUEUE + ".dlq") == 0
    moved = plain.get_all(QUEUE)
    assert [properties.message_id for _, properties, _ in moved] == ids  # in order
    assert "x-dead-letter-reason" not in (moved[0][1].headers or {})


def test_requeue_of_some_events_leaves_the_others_parked(cli_config, plain):
    ids = park(plain, 20)
    result = knowledge_nest(cli_config, "dlq", "requeue", "--event-id", ids[3],
                            "--event-id", ids[17], "--json")
    assert json.loads(result.stdout) == {"requeued": 2}
    assert [properties.message_id for _, properties, _ in plain.get_all(QUEUE)] == [ids[3],
                                                                                     ids[17]]
    wait_until(lambda: plain.message_count(QUEUE + ".dlq") == 18, message="the rest stay")
    assert [p.message_id for _, p, _ in plain.get_all(QUEUE + ".dlq")] == [
        event_id for event_id in ids if event_id not in (ids[3], ids[17])]


def test_requeue_on_a_terminal_draws_a_progress_bar(cli_config, plain):
    park(plain, PARKED)
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "operations.cli", "--config",
                                str(cli_config), "dlq", "requeue", "--all"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=terminal, text=True)
    os.close(terminal)
    screen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the command ended and closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(controller)
    assert process.wait(timeout=120) == 0
    assert process.stdout.read() == f"requeued {PARKED} message(s)\n"
    draws = [part for part in screen.decode().replace("\r\n", "\n").split("\r")
             if f"{QUEUE}.dlq" in part]
    assert draws, screen
    final = draws[-1]
    assert "100%" in final and f"{PARKED}/{PARKED}" in final and "msg/s" in final
    assert plain.message_count(QUEUE) == PARKED
