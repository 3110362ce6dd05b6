"""knowledge-nest as an operator meets it: help, version, config errors, times, progress."""
import argparse
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from operations import cli

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def subcommands(parser, prefix=()):
    """Every (sub)command path of the parser, e.g. ("dlq", "requeue")."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield prefix + (name,)
                yield from subcommands(child, prefix + (name,))


COMMANDS = list(subcommands(cli.build_parser()))


def test_every_command_is_listed():
    assert {path[0] for path in COMMANDS} == {
        "declare", "migrate", "makemigration", "dlq", "migrate-queues", "create-admin",
        "replay", "publish"}
    assert {path[1] for path in COMMANDS if len(path) == 2} == {"list", "show", "requeue",
                                                                "purge"}


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_a_description_and_examples(path, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main([*path, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: knowledge-nest {' '.join(path)}")
    description = out.split("\n\n")[1]
    assert len(description) > 20 and description.endswith(".")
    examples = out.split("examples:\n", 1)[1].splitlines()
    assert examples and all(line.startswith("  knowledge-nest ") and f" {path[0]}" in line
                            for line in examples)


def test_dlq_actions_have_their_own_options(capsys):
    for action, has, lacks in [("list", "--json", "--yes"), ("show", "--limit", "--all"),
                               ("requeue", "--event-id", "--limit"), ("purge", "--yes", "--json")]:
        with pytest.raises(SystemExit):
            cli.main(["dlq", action, "--help"])
        options = capsys.readouterr().out.split("options:")[1]
        assert has in options and lacks not in options, action
    with pytest.raises(SystemExit) as exited:
        cli.main(["dlq", "purge", "--limit", "3"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --limit" in capsys.readouterr().err


def run_cli(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "operations.cli", *args], cwd=kwargs.pop(
        "cwd", ROOT), capture_output=True, text=True, timeout=60,
        env=dict(os.environ, **(env or {})), **kwargs)


def test_version():
    from importlib.metadata import version
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"knowledge-nest {version('knowledge-nest')}\n"


def last_line(text):
    return text.strip().splitlines()[-1]


def test_a_missing_config_is_one_line_naming_the_file(tmp_path):
    result = run_cli("dlq", "list", cwd=tmp_path)  # no config.yml here
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert last_line(result.stderr) == ("knowledge-nest: error: no config file at 'config.yml':"
                                        " pass --config FILE or set KN_CONFIG")
    missing = tmp_path / "nope" / "kn.yml"
    result = run_cli("declare", env={"KN_CONFIG": str(missing)})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"no config file at '{missing}'" in last_line(result.stderr)


def test_kn_config_names_the_config_and_config_wins_over_it(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("AMQP_URI: [unclosed\n")
    result = run_cli("declare", env={"KN_CONFIG": str(broken)})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert last_line(result.stderr).startswith(
        f"knowledge-nest: error: the config file '{broken}' is not valid YAML")
    result = run_cli("--config", str(tmp_path / "other.yml"), "declare",
                     env={"KN_CONFIG": str(broken)})
    assert f"no config file at '{tmp_path / 'other.yml'}'" in last_line(result.stderr)


@pytest.mark.parametrize("value, back", [
    ("90s", timedelta(seconds=90)), ("30m", timedelta(minutes=30)), ("1h", timedelta(hours=1)),
    ("2d", timedelta(days=2)), ("1w", timedelta(weeks=1)), ("1h30m", timedelta(minutes=90)),
    (" 2D ", timedelta(days=2)),
])
def test_relative_times_count_back_from_now(value, back):
    assert cli.parse_time(value, now=NOW) == NOW - back


@pytest.mark.parametrize("value, expected", [
    ("2026-11-26T10:00:00Z", datetime(2026, 11, 26, 10, tzinfo=timezone.utc)),
    ("2026-11-26T10:00:00", datetime(2026, 11, 26, 10, tzinfo=timezone.utc)),
    ("2026-11-26T12:00:00+02:00", datetime(2026, 11, 26, 10, tzinfo=timezone.utc)),
    ("2026-11-26", datetime(2026, 11, 26, tzinfo=timezone.utc)),
])
def test_absolute_times_are_iso_8601_and_utc_without_an_offset(value, expected):
    assert cli.parse_time(value, now=NOW) == expected


@pytest.mark.parametrize("value", ["yesterday", "1 hour", "-1h", "1y", "h",
                                   "0001-01-01T00:00:00+01:00"])
def test_a_bad_time_is_a_usage_error_naming_the_option(value, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["replay", f"--since={value}"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --since: not a time: {value!r}" in err
    assert "90s, 30m, 1h, 2d" in err


def test_replay_takes_relative_times_for_since_and_until():
    before = datetime.now(timezone.utc)
    args = cli.build_parser().parse_args(["replay", "--since", "2d", "--until", "1h"])
    after = datetime.now(timezone.utc)
    assert before - timedelta(days=2) <= args.since <= after - timedelta(days=2)
    assert before - timedelta(hours=1) <= args.until <= after - timedelta(hours=1)


# progress: a bar on a terminal, count lines on a pipe ----------------------------------------

PROGRESS_SCRIPT = textwrap.dedent("""
    import sys, time
    from operations.cli import progress_factory
    progress = progress_factory()
    with progress("requeue", 600) as bar:
        for _ in range(3):
            bar.update(200)
            time.sleep(0.1)
    print("done")
""")


def test_progress_on_a_pipe_is_plain_count_lines():
    result = subprocess.run([sys.executable, "-c", PROGRESS_SCRIPT], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    lines = [line for line in result.stderr.splitlines() if line.startswith("requeue")]
    assert lines == ["requeue: 600/600"]  # under 2 s: only the last one
    assert "\r" not in result.stderr and "\x1b" not in result.stderr


def test_count_lines_print_at_most_every_interval():
    import io
    stream = io.StringIO()
    lines = cli.CountLines("migrate", 3, stream, interval=0)
    for _ in range(3):
        lines.update(1)
    lines.close()
    assert stream.getvalue() == "migrate: 1/3\nmigrate: 2/3\nmigrate: 3/3\n"


def test_progress_on_a_terminal_is_a_bar_with_rate():
    controller, terminal = pty.openpty()
    # a terminal window's size (a fresh pty has 0 columns)
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    process = subprocess.Popen([sys.executable, "-c", PROGRESS_SCRIPT], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=terminal, text=True)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0
    assert process.stdout.read() == "done\n"
    screen = output.decode("utf-8", "replace")
    draws = [part for part in screen.replace("\r\n", "\n").split("\r") if "requeue" in part]
    assert len(draws) >= 2  # redrawn in place (\r), not one line per update
    final = draws[-1]
    assert "requeue: 100%" in final and "600/600" in final and "msg/s" in final
