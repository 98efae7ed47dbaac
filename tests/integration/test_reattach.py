"""Reattach, the way it happens: the orchestrator is SIGKILLed mid-run, the run is re-executed
from failure with dagster's own API, and the new run adopts the container that still runs.

Exactly one container runs the job; every message it sent, before and after the kill, is in
the new run; the orphan sweep leaves the adopted container alone; nothing is left at the end.
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import docker
import pytest
from dagster import DagsterInstance

from pipes_docker import MANAGED_LABEL, PipesDockerClient, PipesDockerSwarmClient

from .swarm import SwarmCluster
from .test_swarm import assert_nothing_left, ours

JOB_SCRIPT = Path(__file__).with_name("reattach_job.py")
JOB_LABEL = "io.pipes-docker.dagster-job=reattach_job"
LEASE_LABEL = "io.pipes-docker.lease-for"


def start(
    work_dir: Path, transport: str, *run_id: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    env = {**os.environ, "DAGSTER_HOME": str(work_dir / "home"), "PAUSE": "10", **(env or {})}
    return subprocess.Popen(
        [sys.executable, str(JOB_SCRIPT), str(work_dir), transport, *run_id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the step's worker process too
    )


def job_containers(client: docker.DockerClient) -> list[docker.models.containers.Container]:
    return list(client.containers.list(all=True, filters={"label": JOB_LABEL}, ignore_removed=True))


def wait_for(check, what: str, timeout: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.parametrize("transport", ["auto", "streamed"])
def test_a_sigkilled_run_reexecuted_from_failure_adopts_its_container(
    transport: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    (tmp_path / "home").mkdir()
    since = int(time.time()) - 1
    first = start(tmp_path, transport)
    try:
        wait_for(
            lambda: any(
                "container started" in p.read_text()
                for p in (tmp_path / "logs").glob("*/stdout.log")
            ),
            "the container's first output",
        )
        # The run and its step worker, killed at once: no cleanup, the container runs on.
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        first.kill()
        first.communicate()
    (container,) = job_containers(docker_client)
    assert container.status == "running"

    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        (killed_run,) = instance.get_runs()
        instance.report_run_failed(killed_run)  # what run monitoring does with a dead worker

    swept: list[str] = []

    def sweep_while_adopted() -> None:
        wait_for(
            lambda: docker_client.containers.list(all=True, filters={"label": LEASE_LABEL}),
            "the adopting run's lease",
        )
        swept.extend(PipesDockerClient(docker_client=docker_client).remove_orphans())

    sweeper = threading.Thread(target=sweep_while_adopted, daemon=True)
    sweeper.start()
    second = start(tmp_path, transport, killed_run.run_id)
    out, err = second.communicate(timeout=180)
    sweeper.join(30)

    assert second.returncode == 0, err[-4000:]
    assert container.id not in swept  # a live reattach owns it: the sweep spared it
    new_run_id = out.strip().splitlines()[-1]
    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        logs = [e.user_message for e in instance.all_logs(new_run_id)]
    assert "logged before the kill" in logs  # written while the old orchestrator lived
    assert "logged after the kill" in logs
    assert "custom messages received: ['first', 'second']" in logs
    assert any("reattached to container" in line for line in logs)
    creates = docker_client.events(
        since=since,
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "create", "label": JOB_LABEL},
    )
    assert len(list(creates)) == 1  # exactly one container ran the job
    assert job_containers(docker_client) == []
    assert docker_client.containers.list(all=True, filters={"label": LEASE_LABEL}) == []
    assert (
        docker_client.containers.list(
            all=True, filters={"label": [f"{MANAGED_LABEL}=true", JOB_LABEL]}
        )
        == []
    )
    assert list((tmp_path / "pipes-tmp").iterdir()) == []


@pytest.fixture
def swarm_cleared(swarm: SwarmCluster) -> Iterator[SwarmCluster]:
    """The Swarm, with whatever a failed test left of ours removed after it: one failure must
    not make every later Swarm test fail its own nothing-left check (the test asserts first)."""
    yield swarm
    for item in [*ours(swarm.manager.services.list()), *ours(swarm.manager.configs.list())]:
        with contextlib.suppress(docker.errors.NotFound):
            item.remove()


def test_a_sigkilled_swarm_run_reexecuted_from_failure_adopts_its_service(
    tmp_path: Path, swarm_cleared: SwarmCluster
) -> None:
    """The same on a two-node Swarm: the job's task runs on the worker while its orchestrator
    is killed; the re-executed run adopts the service and reads its messages again from the
    service's logs. The worker's engine says how often the job's container was started."""
    swarm = swarm_cleared
    (tmp_path / "home").mkdir()
    since = int(time.time()) - 1
    # Long enough to outlast the second orchestrator's start on a busy machine: the adoption
    # under test is of a task that still runs.
    env = {"DOCKER_HOST": swarm.manager_url, "REATTACH_SWARM_NODE": swarm.worker_hostname}
    env["PAUSE"] = "30"
    first = start(tmp_path, "streamed", env=env)
    try:
        wait_for(
            lambda: any(
                "container started" in p.read_text()
                for p in (tmp_path / "logs").glob("*/stdout.log")
            ),
            "the task's first output",
        )
        os.killpg(first.pid, signal.SIGKILL)  # no cleanup: the task runs on
        first.wait(timeout=30)
    finally:
        first.kill()
        first.communicate()
    (service,) = ours(swarm.manager.services.list(filters={"label": JOB_LABEL}))
    # The job's output is already out, but the manager may still say "starting" for a moment:
    # its view lags the worker's. The adoption under test is of a task it knows runs.
    wait_for(
        lambda: [t["Status"]["State"] for t in service.tasks()] == ["running"],
        "the manager to see the task running",
        timeout=20,
    )

    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        (killed_run,) = instance.get_runs()
        instance.report_run_failed(killed_run)

    swept: list[str] = []
    leases: list[object] = []
    second_done = threading.Event()

    def sweep_while_adopted() -> None:
        while not second_done.is_set():
            leases.extend(swarm.manager.configs.list(filters={"label": LEASE_LABEL}))
            if leases:
                client = PipesDockerSwarmClient(docker_client=swarm.manager)
                swept.extend(client.remove_orphans())
                return
            time.sleep(0.1)

    sweeper = threading.Thread(target=sweep_while_adopted, daemon=True)
    sweeper.start()
    second = start(tmp_path, "streamed", killed_run.run_id, env=env)
    try:
        out, err = second.communicate(timeout=180)
    finally:
        second_done.set()
        sweeper.join(30)

    assert second.returncode == 0, err[-4000:]
    new_run_id = out.strip().splitlines()[-1]
    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        logs = [e.user_message for e in instance.all_logs(new_run_id)]
    assert leases, f"the adopting run took no lease: {logs}"
    assert service.id not in swept  # the killed orchestrator's service is leased: spared
    assert logs.count("logged before the kill") == 1  # re-read from the service's logs, once
    assert logs.count("logged after the kill") == 1
    assert "custom messages received: ['first', 'second']" in logs
    assert "reattached: True" in logs, logs
    assert any(f"reattached to service {service.name}" in line for line in logs)
    starts = swarm.worker.events(
        since=since,
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "start", "label": JOB_LABEL},
    )
    assert len(list(starts)) == 1  # the job's container was started once, not twice
    assert swarm.manager.configs.list(filters={"label": LEASE_LABEL}) == []
    assert_nothing_left(swarm)
