"""The quick benchmark harness end to end: every row of the table measured, with a positive number.

Never a speed assertion: the numbers depend on the machine and on what else runs on it.
"""
import json
import os
import sys

import pytest

pytest.importorskip("psutil", reason="the [bench] extra (make bench installs it)")

from bench.harness import ROW_KEYS  # noqa: E402
from tests.support import processes  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_quick(module, tmp_path, json_name, timeout, *args):
    """``python -m <module> --quick`` into tmp_path (a subprocess: the harness is plain threads,
    the test session is monkey-patched by eventlet); its JSON, after a zero exit status."""
    completed = processes.run(
        [sys.executable, "-m", module, "--quick", *args, "--out", str(tmp_path), "--notes", ""],
        cwd=ROOT, timeout=timeout)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads((tmp_path / json_name).read_text())


@pytest.mark.bench
@pytest.mark.integration
@pytest.mark.timeout(240)
def test_quick_harness_fills_every_row(tmp_path):
    result = run_quick("bench", tmp_path, "results.json", 230)
    rows = {row["key"]: row for row in result["rows"]}
    assert list(rows) == ROW_KEYS
    for key, row in rows.items():
        assert len(row["runs"]) >= 3, key
        assert all(value > 0 for value in row["runs"]), (key, row["runs"])
        assert row["median"] > 0, key
    assert set(result["machine"]) >= {"cores", "memory_gb", "python", "nameko", "kombu",
                                      "eventlet", "rabbitmq", "date"}
    assert all(info["peak_rss_mb"] > 0 for info in result["processes"].values())
    assert "broker (beam.smp)" in next(iter(result["cpu_percent_by_phase"].values()))
    markdown = (tmp_path / "results.md").read_text()
    for row in rows.values():
        assert row["what"] in markdown


@pytest.mark.bench
@pytest.mark.integration
@pytest.mark.timeout(420)
def test_quick_harness_on_postgresql_fills_every_row(tmp_path):
    result = run_quick("bench", tmp_path, "results-postgresql.json", 410, "--db", "postgresql")
    assert result["database"] == "postgresql" and result["machine"]["postgresql"] != "unknown"
    rows = {row["key"]: row for row in result["rows"]}
    assert list(rows) == ROW_KEYS
    for key, row in rows.items():
        assert len(row["runs"]) >= 3 and all(value > 0 for value in row["runs"]), (key, row)
    markdown = (tmp_path / "results.md").read_text()
    assert "## `make bench` on PostgreSQL" in markdown
    assert not (tmp_path / "results.json").exists()  # SQLite's figures are not touched


@pytest.mark.bench
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_quick_data_scale_measures_every_request_on_both_sides(tmp_path):
    from bench import scale
    result = run_quick("bench.scale", tmp_path, "results-scale.json", 880)
    assert scale.check_complete(result) == []
    for key in ("courses.first.c1.ratio", "relay.large", "replay.large"):
        assert len(result["values"][key]) >= 3, key
    large = result["loaded_rows"]["large"]
    assert large["course"]["outbox_events"] >= scale.QUICK["large"]["enrollments"]
    assert large["analytics"]["event_log"] == scale.QUICK["large"]["events"]
    # bounded growth: the sweep deleted the inbox records of every step before the last one (rows,
    # not bytes: those depend on autovacuum)
    growth = result["growth"]
    assert len(growth) == scale.QUICK["growth_steps"]
    assert growth[-1]["total_enrollments"] > growth[0]["total_enrollments"]
    for db in ("notification", "analytics"):
        assert growth[-1][f"{db}.inbox_records.rows"] <= growth[-1]["enrollments"], db
    markdown = (tmp_path / "results.md").read_text()
    assert "## Data scale" in markdown and "### Bounded growth" in markdown
    for _, what in scale.REQUESTS:
        assert what in markdown


@pytest.mark.bench
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_quick_login_burst_counts_every_answer(tmp_path):
    from bench import burst
    result = run_quick("bench.burst", tmp_path, "results-burst.json", 290)
    assert burst.check_complete(result) == []
    for clients, each in burst.QUICK["levels"].items():
        for run in range(3):
            answered = sum(result["values"][f"c{clients}.{kind}"][run]
                           for kind in ("ok", "busy", "other"))
            assert answered == clients * each  # every login answered, none lost
    assert "## Bursts of logins" in (tmp_path / "results.md").read_text()
