"""The README's benchmark command, run small on the real engine: it measures and reports.

Figures are not judged here (they belong to the benchmark's own report); what is checked is
that the command works as the README shows it, that every row's runs succeeded and delivered
their messages, that the fresh-process rows are compared with the reference round by round, and
that nothing is left behind.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_the_fresh_process_benchmark_measures_every_runner_and_compares_with_the_reference(
    tmp_path: Path,
) -> None:
    report = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.pipes_bench",
            "--quick",
            "--scenarios",
            "startup-fresh",
            "--runners",
            "auto,reference,docker-py-logs",
            "--fresh-runs",
            "2",
            "--json",
            str(report),
            "--markdown",
            str(tmp_path / "results.md"),
            "--png",
            str(tmp_path / "results.png"),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    rows = {
        row["runner"]: row["result"]
        for row in json.loads(report.read_text())["suites"]["local"]["rows"]
        if row["scenario"] == "startup-fresh"
    }
    assert set(rows) == {"auto", "reference", "docker-py-logs"}
    for runner, result in rows.items():
        assert result["ok"], (runner, result.get("error"))
        assert len(result["walls"]) == 2, runner
    assert rows["auto"]["delivered"] == rows["auto"]["expected"] == 6  # 3 messages, 2 runs
    assert rows["auto"]["containers_left"] == 0
    assert rows["auto"]["temp_left"] == 0
    assert rows["auto"]["vs_reference"]["rounds"] == 2
    # Each row's wall cut where its client was made, at the start request and at the exit's
    # sight: the five phases add up.
    for runner, result in rows.items():
        phases = result["phases"]
        assert set(phases) == {"setup", "to_start", "start", "running", "after_exit"}, runner
        assert all(seconds > 0 for seconds in phases.values()), (runner, phases)
        assert 0.05 < phases["start"] < 2.0, (runner, phases)  # the engine's container start
    assert set(rows["auto"]["vs_reference"]["phases_diff"]) == set(rows["auto"]["phases"])
    # The client's own package is imported inside the clock, as a step process loads it.
    assert rows["auto"]["setup_modules"] > 20
    assert rows["reference"]["setup_modules"] > 20
    low, high = rows["auto"]["vs_reference"]["wall_diff_interval"]
    assert low <= rows["auto"]["vs_reference"]["wall_diff"] <= high
    text = (tmp_path / "results.md").read_text()
    assert "vs dagster-docker round by round" in text
    assert "setup/to start/start/running/after exit" in text
