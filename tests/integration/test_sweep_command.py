"""``python -m pipes_docker sweep`` on a real engine, after an orchestrator was SIGKILLed mid-run.

The orchestrator and the sweep run under a hostname of their own (a UTS namespace: this test
runs as root): other test sessions sharing the engine sweep the dead orchestrator's container
only when it is theirs by host, so they cannot take it away before this test's sweep sees it.
"""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import docker

from pipes_docker.tempdirs import mark_owner

from .test_lifecycle import ORCHESTRATOR, containers_of, wait_for_started_container

ROOT = Path(__file__).parents[2]


def own_host(hostname: str, *command: str) -> list[str]:
    """``command`` under ``hostname`` (a new UTS namespace), with the same pid."""
    return ["unshare", "--uts", "sh", "-c", f'hostname {hostname} && exec "$@"', "sh", *command]


def environment() -> dict[str, str]:
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": pythonpath}


def start_orchestrator(work_dir: Path, hostname: str) -> subprocess.Popen[str]:
    (work_dir / "pipes-tmp").mkdir(parents=True, exist_ok=True)
    (work_dir / "home").mkdir(exist_ok=True)
    return subprocess.Popen(
        own_host(hostname, sys.executable, str(ORCHESTRATOR), "sleep", str(work_dir), ""),
        env={**environment(), "DAGSTER_HOME": str(work_dir / "home")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def sweep(hostname: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        own_host(hostname, sys.executable, "-m", "pipes_docker", "sweep", *args),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_sweep_lists_then_removes_a_killed_orchestrators_container_and_temp_dir(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    hostname = f"sweep-test-{secrets.token_hex(4)}"
    process = start_orchestrator(tmp_path, hostname)
    try:
        wait_for_started_container(docker_client, process, tmp_path)
        process.kill()  # no chance to clean up
        process.wait(timeout=30)
    finally:
        process.communicate()
    (orphan,) = containers_of(docker_client, process.pid)
    (temp_dir,) = (tmp_path / "pipes-tmp").iterdir()
    assert (temp_dir / "io" / "messages").exists()  # what a retry could have re-read
    temp_root = str(tmp_path / "pipes-tmp")

    dry = sweep(hostname, "--dry-run", "--temp-dir-root", temp_root)

    assert f"would remove container {orphan.name}" in dry.stdout
    assert f"would remove temp dir {temp_dir}" in dry.stdout
    assert containers_of(docker_client, process.pid) != []
    assert temp_dir.exists()

    done = sweep(hostname, "--temp-dir-root", temp_root)

    assert f"removed container {orphan.name}" in done.stdout
    assert f"removed temp dir {temp_dir}" in done.stdout
    assert containers_of(docker_client, process.pid) == []
    assert list((tmp_path / "pipes-tmp").iterdir()) == []


def test_sweep_removes_a_dead_orchestrators_temp_dir_and_leaves_a_live_ones(
    tmp_path: Path,
) -> None:
    hostname = f"sweep-test-{secrets.token_hex(4)}"
    dead = tmp_path / "pipes-docker-dead"
    live = tmp_path / "pipes-docker-live"
    other = tmp_path / "pipes-docker-chunk-store"  # shares the prefix, is not a run's dir
    for path in (dead / "io", live / "io", other):
        path.mkdir(parents=True)
    gone = subprocess.run(
        own_host(
            hostname,
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(ROOT)!r});"
            f" from pipes_docker.tempdirs import mark_owner; mark_owner({str(dead)!r})",
        ),
        env=environment(),
        check=True,
    )
    assert gone.returncode == 0  # that process, the dead dir's orchestrator, has exited
    mark_owner(str(live))  # this test process stands for a live orchestrator (another host)

    done = sweep(hostname, "--temp-dir-root", str(tmp_path))

    assert f"removed temp dir {dead}" in done.stdout
    assert not dead.exists()
    assert live.exists() and other.exists()
