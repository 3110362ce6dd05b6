"""The quick benchmark harness end to end: every row of the table measured, with a positive number.

Never a speed assertion: the numbers depend on the machine and on what else runs on it.
"""
import os
import sys

import pytest

pytest.importorskip("psutil", reason="the [bench] extra (make bench installs it)")

from bench.harness import ROW_KEYS  # noqa: E402
from tests.support import processes  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.bench
@pytest.mark.integration
@pytest.mark.timeout(240)
def test_quick_harness_fills_every_row(tmp_path):
    # a subprocess: the harness is plain threads, the test session is monkey-patched by eventlet
    completed = processes.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path), "--notes", ""],
        cwd=ROOT, timeout=230)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    import json
    result = json.loads((tmp_path / "results.json").read_text())
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
