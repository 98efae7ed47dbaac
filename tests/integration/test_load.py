"""Load held: many concurrent runs, every message of every run counted, nothing left behind.

32 runs of 10,000 messages each, from the threads of one orchestrator process and from 8
orchestrator processes at once, on each transport. Counts are exact; no timing is asserted
(throughput figures live in benchmarks/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import pytest

from pipes_docker import wait_for_removals

from .load_orchestrator import make_client, run_many
from .test_lifecycle import containers_of

LOAD = Path(__file__).with_name("load_orchestrator.py")
RUNS, MESSAGES = 32, 10_000


def assert_every_run_complete(results: list[dict[str, Any]], runs: int) -> None:
    assert len(results) == runs
    for result in results:
        assert result["ok"], result
        assert result["count"] == MESSAGES, result
        assert result["exact"], result
        assert result["reported_marker"] == result["marker"]
    assert len({r["container_id"] for r in results}) == runs


@pytest.mark.parametrize("transport", ["mounted", "streamed"])
def test_32_concurrent_runs_in_one_process_deliver_every_message(
    transport: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    results = run_many(make_client(transport, tmp_path), RUNS, MESSAGES)

    assert_every_run_complete(results, RUNS)
    assert wait_for_removals(timeout=120)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("transport", ["mounted", "streamed"])
def test_32_concurrent_runs_from_8_processes_deliver_every_message(
    transport: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(LOAD),
                str(RUNS // 8),
                str(MESSAGES),
                transport,
                str(tmp_path / f"p{i}"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(8)
    ]
    results: list[dict[str, Any]] = []
    for process in processes:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
        results.extend(json.loads(out.strip().splitlines()[-1]))

    assert_every_run_complete(results, RUNS)
    for process in processes:
        assert containers_of(docker_client, process.pid) == []
    for i in range(8):
        assert list((tmp_path / f"p{i}").iterdir()) == []


@pytest.mark.parametrize("transport", ["mounted", "streamed"])
def test_a_log_flood_slower_to_handle_than_to_write_arrives_whole(
    transport: str, tmp_path: Path, run_asset: Any
) -> None:
    # Dagster takes about a millisecond per log message; the job writes them far faster, and
    # the engine gives a client only seconds after the container exits to read the rest of its
    # output. Messages must still all arrive, exactly once.
    code = """
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    for i in range(20_000):
        pipes.log.info(f"flood {i}")
"""
    run = run_asset(make_client(transport, tmp_path), code)

    assert run.success, run.error
    flood = [m for m in run.log_messages() if m.startswith("flood ")]
    assert flood == [f"flood {i}" for i in range(20_000)]
