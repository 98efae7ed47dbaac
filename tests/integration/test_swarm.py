"""PipesDockerSwarmClient on a real two-node Swarm (the ``swarm`` fixture of swarm.py).

Jobs are constrained to the worker node, which shares nothing with this process but the Swarm:
the context reaches it as configs or inline, messages and output come back through the
manager's service logs. Every test checks that the manager keeps no service or config of ours
and that the worker keeps no container of ours.
"""

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from dagster import DagsterInstance

from pipes_docker import MANAGED_LABEL, PipesDockerSwarmClient, wait_for_removals
from pipes_docker.ownership import HOST_LABEL, PID_LABEL, PIDNS_LABEL, pid_namespace
from pipes_docker.swarm.backend import REMOVAL_MARGIN_SECONDS
from tests.jobs import AssetRun

from .conftest import TEST_IMAGE
from .engines import DIND_IMAGE, wait_until
from .swarm import SwarmCluster, two_node_swarm
from .test_lifecycle import start_orchestrator

RunAsset = Callable[..., AssetRun]

PIPES_JOB = """
import sys
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    big = pipes.get_extra("big") if "big" in pipes.extras else ""
    pipes.log.info(f"context extras arrived: {len(big)} chars")
    print("an ordinary stdout line", flush=True)
    print("an ordinary stderr line", file=sys.stderr, flush=True)
    print("w" * 40_000, flush=True)
    pipes.report_custom_message({"node": open("/etc/hostname").read().strip()})
    pipes.report_asset_materialization(
        metadata={"big_chars": len(big), "blob": "b" * int(pipes.extras.get("blob", 10))}
    )
"""


def ours(items: list[Any]) -> list[Any]:
    return [
        item
        for item in items
        if (item.attrs.get("Spec") or {}).get("Labels", {}).get(MANAGED_LABEL)
    ]


def assert_nothing_left(swarm: SwarmCluster) -> None:
    assert wait_for_removals(timeout=120)  # a run that ended well removes in the background
    assert ours(swarm.manager.services.list()) == []
    assert ours(swarm.manager.configs.list()) == []
    # The manager deletes a removed service's task; its node removes the container just after
    # (possibly between docker-py's listing and its inspect of each container listed).
    wait_until(
        lambda: (
            not swarm.worker.containers.list(
                all=True, filters={"label": MANAGED_LABEL}, ignore_removed=True
            )
        ),
        30,
        "the worker to remove the task's container",
    )


@pytest.fixture
def swarm_client(swarm: SwarmCluster, tmp_path: Path) -> Iterator[PipesDockerSwarmClient]:
    client = PipesDockerSwarmClient(
        docker_client=swarm.manager,
        service_kwargs={
            "constraints": [f"node.hostname=={swarm.worker_hostname}"],
            # Host networking inside the node's own namespace: no bridge is needed.
            "networks": ["host"],
        },
        log_dir=str(tmp_path / "logs"),
        termination_timeout_seconds=2,
        schedule_timeout_seconds=20,
    )
    yield client
    assert_nothing_left(swarm)


def logs_of(tmp_path: Path) -> tuple[str, str]:
    (directory,) = list((tmp_path / "logs").iterdir())
    return (directory / "stdout.log").read_text(), (directory / "stderr.log").read_text()


def test_a_job_constrained_to_the_worker_runs_there_and_everything_comes_back(
    swarm: SwarmCluster, swarm_client: PipesDockerSwarmClient, run_asset: RunAsset, tmp_path: Path
) -> None:
    big = secrets.token_hex(500_000)  # a 1 MB context: over the 500 KiB config cap

    run = run_asset(swarm_client, PIPES_JOB, extras={"big": big, "blob": 5_000_000})

    assert run.success, run.error
    metadata = run.metadata
    assert metadata["pipes_docker/node"] == swarm.worker_hostname
    assert metadata["pipes_docker/exit_code"] == 0
    assert metadata["pipes_docker/service_mode"] == "replicated-job"
    assert metadata["big_chars"] == 1_000_000
    assert metadata["blob"] == "b" * 5_000_000  # a 5 MB message, in 16 KiB log pieces
    assert "context extras arrived: 1000000 chars" in run.log_messages()
    stdout, stderr = logs_of(tmp_path)
    assert stdout.splitlines() == ["an ordinary stdout line", "w" * 40_000]
    assert stderr.splitlines() == ["an ordinary stderr line"]
    assert "__dagster_pipes_version" not in stdout + stderr


def test_a_failing_job_names_the_node_and_quotes_its_stderr(
    swarm: SwarmCluster, swarm_client: PipesDockerSwarmClient, run_asset: RunAsset
) -> None:
    run = run_asset(
        swarm_client, command=["sh", "-c", "echo 'loading data' >&2; echo 'bad row 7' >&2; exit 3"]
    )

    assert not run.success
    assert "exited with code 3" in run.error
    assert f"on node {swarm.worker_hostname} (image" in run.error
    assert "bad row 7" in run.error


def test_a_task_no_node_can_take_fails_within_the_schedule_timeout(
    swarm: SwarmCluster, run_asset: RunAsset
) -> None:
    client = PipesDockerSwarmClient(
        docker_client=swarm.manager,
        service_kwargs={"constraints": ["node.labels.gpu==true"], "networks": ["host"]},
        schedule_timeout_seconds=5,
    )

    started = time.monotonic()
    run = run_asset(client, command=["true"])

    assert time.monotonic() - started < 30
    assert not run.success
    assert "PipesDockerLaunchError" in run.error
    assert "did not start within 5 s" in run.error
    assert "no suitable node" in run.error
    assert_nothing_left(swarm)


def test_an_image_no_node_has_fails_clearly_naming_the_node(
    swarm: SwarmCluster, swarm_client: PipesDockerSwarmClient, run_asset: RunAsset
) -> None:
    started = time.monotonic()
    run = run_asset(swarm_client, image="pipes-docker-not-built:latest", command=["true"])

    assert time.monotonic() - started < 60
    assert not run.success
    assert "PipesDockerImageError" in run.error or "PipesDockerLaunchError" in run.error
    assert "pipes-docker-not-built:latest" in run.error
    assert swarm.worker_hostname in run.error


def test_a_timeout_stops_the_job_and_removes_its_service(
    swarm: SwarmCluster, swarm_client: PipesDockerSwarmClient, run_asset: RunAsset
) -> None:
    code = "import time\nprint('started', flush=True)\ntime.sleep(300)"

    started = time.monotonic()
    run = run_asset(swarm_client, code, timeout_seconds=3)

    assert time.monotonic() - started < 60
    assert not run.success
    assert "PipesDockerTimeoutError" in run.error
    assert "timed out after 3 seconds" in run.error
    assert "started" in run.error  # the output until then is quoted
    assert_nothing_left(swarm)


def test_the_orphan_sweep_removes_a_dead_orchestrators_service_and_config(
    swarm: SwarmCluster,
) -> None:
    dead = {
        MANAGED_LABEL: "true",
        HOST_LABEL: socket.gethostname(),
        PID_LABEL: "999999999",
        PIDNS_LABEL: pid_namespace(),
    }
    name = f"pipes-orphan-{secrets.token_hex(4)}"
    config = swarm.manager.configs.create(
        name=f"{name}-c", data=b"{}", labels={**dead, "io.pipes-docker.service": name}
    )
    service = swarm.manager.services.create(
        TEST_IMAGE,
        ["sleep", "300"],
        name=name,
        labels=dead,
        container_labels=dead,
        mode=docker.types.ServiceMode("replicated-job", replicas=1),
        restart_policy=docker.types.RestartPolicy(condition="none"),
        constraints=[f"node.hostname=={swarm.worker_hostname}"],
        networks=["host"],
    )
    live = swarm.manager.services.create(
        TEST_IMAGE,
        ["true"],
        name=f"{name}-live",
        labels={**dead, PID_LABEL: str(os.getpid())},
        mode=docker.types.ServiceMode("replicated-job", replicas=1),
        restart_policy=docker.types.RestartPolicy(condition="none"),
        networks=["host"],
    )
    try:
        removed = PipesDockerSwarmClient(docker_client=swarm.manager).remove_orphans()

        assert set(removed) == {service.id, config.id}
        assert [s.name for s in ours(swarm.manager.services.list())] == [f"{name}-live"]
    finally:
        live.remove()
    assert_nothing_left(swarm)


# -- a manager older than Engine 24 (moby/moby#44312) -------------------------------------------


@pytest.fixture(scope="module")
def legacy_swarm(docker_client: docker.DockerClient) -> Iterator[SwarmCluster]:
    """A Swarm of Engine 20.10 nodes (Debian bookworm's), whose managers leave a removed
    replicated-job service's tasks behind, running or not."""
    with two_node_swarm(docker_client, image=DIND_IMAGE) as cluster:
        yield cluster


def test_on_an_engine_20_10_swarm_jobs_run_once_and_leave_nothing_either(
    legacy_swarm: SwarmCluster, run_asset: RunAsset, tmp_path: Path
) -> None:
    client = PipesDockerSwarmClient(
        docker_client=legacy_swarm.manager,
        service_kwargs={
            "constraints": [f"node.hostname=={legacy_swarm.worker_hostname}"],
            "networks": ["host"],
        },
        log_dir=str(tmp_path / "logs"),
        termination_timeout_seconds=2,
    )

    run = run_asset(client, PIPES_JOB)
    timed_out = run_asset(client, "import time\ntime.sleep(300)", timeout_seconds=2)

    assert run.success, run.error
    assert run.metadata["pipes_docker/service_mode"] == "replicated"
    assert run.metadata["pipes_docker/node"] == legacy_swarm.worker_hostname
    assert "context extras arrived: 0 chars" in run.log_messages()
    assert not timed_out.success
    assert "timed out after 2 seconds" in timed_out.error
    assert_nothing_left(legacy_swarm)


# The orchestrator's job (orchestrator.py) has a 5 s grace period.
GRACE_SECONDS = 5
# What the README promises after SIGTERM: the grace period, REMOVAL_MARGIN_SECONDS for the
# removals and 5 s for the log stream to close; then Dagster ends the run (slowly, when busy).
SIGTERM_BOUND_SECONDS = GRACE_SECONDS + REMOVAL_MARGIN_SECONDS + 5
DAGSTER_END_SECONDS = 10
BURNERS = 4


@contextlib.contextmanager
def busy_machine(burners: int) -> Iterator[None]:
    """Every core kept busy (and then some) by CPU-burning processes, for the block."""
    processes = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(burners)
    ]
    try:
        yield
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()


@pytest.mark.parametrize("load", ["idle", "busy"])
def test_an_orchestrator_signalled_mid_run_removes_the_service_and_its_task(
    swarm: SwarmCluster, tmp_path: Path, load: str
) -> None:
    process = start_orchestrator(
        tmp_path,
        "sleep",
        env={
            "DOCKER_HOST": swarm.manager_url,
            "PIPES_DOCKER_TEST_SWARM_NODE": swarm.worker_hostname,
        },
    )
    try:
        wait_until(
            lambda: (
                process.poll() is None
                and any(
                    "container started" in p.read_text() for p in tmp_path.glob("logs/*/stdout.log")
                )
            ),
            60,
            "the Swarm job to start",
        )
        with busy_machine(BURNERS if load == "busy" else 0):
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=SIGTERM_BOUND_SECONDS + DAGSTER_END_SECONDS + 30)
            elapsed = time.monotonic() - signalled
    finally:
        process.kill()
        _, stderr = process.communicate()

    assert process.returncode == 1  # Dagster turned the signal into a failed run
    if load == "idle":
        assert elapsed < 15  # the job got SIGTERM (docker-init passes it on), not the grace's end
    assert elapsed < SIGTERM_BOUND_SECONDS + DAGSTER_END_SECONDS, stderr[-3000:]
    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        (run,) = instance.get_runs()
        messages = [entry.user_message for entry in instance.all_logs(run.run_id)]
    assert "message from the container before the signal" in messages
    # What the bound cut short under load, if anything, the sweep finishes (the orchestrator
    # is gone); on an idle machine the run removed everything itself.
    swept = PipesDockerSwarmClient(docker_client=swarm.manager).remove_orphans()
    if load == "idle":
        assert swept == []
    assert_nothing_left(swarm)


def test_an_engine_that_is_no_swarm_manager_fails_at_once_saying_so(
    docker_client: docker.DockerClient, run_asset: RunAsset
) -> None:
    started = time.monotonic()
    run = run_asset(PipesDockerSwarmClient(docker_client=docker_client), command=["true"])

    assert time.monotonic() - started < 10  # refused, not retried for the policy's 20 s
    assert not run.success
    assert "is not a Swarm manager" in run.error
    assert "PipesDockerEngineError" in run.error


def test_a_docker_context_chooses_the_swarm_manager(
    swarm: SwarmCluster,
    run_asset: RunAsset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The Swarm client makes its engine connection as the container client does (one
    # DockerConnection): a context chosen by DOCKER_CONTEXT reaches the manager.
    for name in ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    created = subprocess.run(
        ["docker", "context", "create", "swarm-manager", "--docker", f"host={swarm.manager_url}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    monkeypatch.setenv("DOCKER_CONTEXT", "swarm-manager")
    client = PipesDockerSwarmClient(
        service_kwargs={
            "constraints": [f"node.hostname=={swarm.worker_hostname}"],
            "networks": ["host"],
        },
        schedule_timeout_seconds=20,
    )

    run = run_asset(client, PIPES_JOB)

    assert run.success, run.error
    assert run.metadata["pipes_docker/node"] == swarm.worker_hostname
    assert run.metadata["pipes_docker/engine"] == swarm.manager_url
    assert run.metadata["pipes_docker/engine_source"] == "context swarm-manager (DOCKER_CONTEXT)"
    assert_nothing_left(swarm)
