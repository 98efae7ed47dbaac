"""Dagster in a container on the host's engine (Docker-outside-of-Docker), for real.

The orchestrator process runs in a container of its own: the base image, this checkout and its
venv mounted at their host paths, the host's Docker socket mounted in, host networking. Its
``/tmp`` and work dir are its own, so the engine (which resolves bind mounts on the host) cannot
see them: the default channel must notice and stream. Given the host path that backs its work
dir, the same run uses the mounted channel; given a wrong one, it fails with the probe's
diagnosis, not a missing file inside the job.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import docker
import pytest

from .conftest import BASE_IMAGE

ROOT = Path(__file__).resolve().parents[2]
PYTHON_HOME = Path(os.path.realpath(sys.executable)).parents[1]  # the interpreter's prefix
WORK_IN_CONTAINER = "/orchestrator-work"


def run_orchestrator_in_a_container(
    client: docker.DockerClient, work_dir: Path, marker: str, host_temp_root: str | None
) -> tuple[int, str, str]:
    (work_dir / "pipes-tmp").mkdir(parents=True)
    (work_dir / "home").mkdir()
    env = {
        "DAGSTER_HOME": f"{WORK_IN_CONTAINER}/home",
        "PIPES_DOCKER_TEST_CHANNEL": "auto",
        "PIPES_DOCKER_TEST_HOST_TEMP_ROOT": host_temp_root or "",
    }
    container = client.containers.run(
        BASE_IMAGE,
        command=[
            str(ROOT / ".venv/bin/python"),
            str(ROOT / "tests/integration/orchestrator.py"),
            "quick",
            WORK_IN_CONTAINER,
            marker,
        ],
        environment=env,
        working_dir=str(ROOT),
        network_mode="host",
        volumes={
            "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
            str(ROOT): {"bind": str(ROOT), "mode": "ro"},
            str(PYTHON_HOME): {"bind": str(PYTHON_HOME), "mode": "ro"},
            str(work_dir): {"bind": WORK_IN_CONTAINER, "mode": "rw"},
        },
        labels={"io.pipes-docker.test": "dood-orchestrator"},
        detach=True,
    )
    try:
        code = int(container.wait(timeout=180)["StatusCode"])
        out = container.logs(stdout=True, stderr=False).decode()
        err = container.logs(stdout=False, stderr=True).decode()
    finally:
        container.remove(force=True)
    return code, out, err


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    return tmp_path / "work"


def test_the_default_streams_when_the_orchestrator_runs_in_a_container(
    docker_client: docker.DockerClient, work_dir: Path
) -> None:
    code, out, err = run_orchestrator_in_a_container(docker_client, work_dir, "dood-1", None)

    assert code == 0, err[-3000:]
    metadata = json.loads(out.strip().splitlines()[-1])
    assert metadata["marker"] == "dood-1"
    assert metadata["pipes_docker/transport"] == "streamed"
    assert (
        "stdout line of dood-1"
        in (work_dir / "logs")
        .joinpath(metadata["pipes_docker/container_name"], "stdout.log")
        .read_text()
    )
    assert list((work_dir / "pipes-tmp").iterdir()) == []


def test_a_host_path_mapping_lets_the_orchestrator_container_use_the_mounted_channel(
    docker_client: docker.DockerClient, work_dir: Path
) -> None:
    host_temp_root = str(work_dir / "pipes-tmp")

    code, out, err = run_orchestrator_in_a_container(
        docker_client, work_dir, "dood-2", host_temp_root
    )

    assert code == 0, err[-3000:]
    metadata = json.loads(out.strip().splitlines()[-1])
    assert metadata["marker"] == "dood-2"
    assert metadata["pipes_docker/transport"] == "mounted"
    assert list((work_dir / "pipes-tmp").iterdir()) == []


def test_a_wrong_mapping_fails_with_the_probes_diagnosis(
    docker_client: docker.DockerClient, work_dir: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "not-the-work-dir"
    elsewhere.mkdir()

    code, _, err = run_orchestrator_in_a_container(
        docker_client, work_dir, "dood-3", str(elsewhere)
    )

    assert code == 1
    assert "PipesDockerChannelError" in err
    assert f"host_temp_dir_root='{elsewhere}' does not back" in err
    assert "context.json" not in err
