"""The engine restarted under a running job (``dockerd --live-restore``): never a hang.

The test starts its own engine: the DinD image (settings read from docker-compose.test.yml's
``dind`` service, so they are not repeated here) with dockerd run in a restart loop and
``--live-restore``, so containers outlive a daemon restart. A job prints a tick every half
second; mid-run, dockerd is sent SIGTERM and comes back. The attach stream dies with the daemon:
the output after that point cannot be read, so the run must fail saying so, within bounded time,
and leave no container behind on the restarted engine.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from pipes_docker import MANAGED_LABEL, PipesDockerClient, PipesDockerStreamedChannel
from tests.jobs import AssetRun

from .engines import answers_ping, dind_container_kwargs, load_images, wait_until

RunAsset = Callable[..., AssetRun]
RESTART_LOOP = "while true; do dind-entrypoint --live-restore; sleep 0.5; done"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def restartable_engine(docker_client: docker.DockerClient) -> Iterator[tuple[Any, str]]:
    port = free_port()
    container = docker_client.containers.run(
        "pipes-docker-dind:latest",
        entrypoint=["sh", "-c", RESTART_LOOP],
        environment={"DOCKER_PORT": str(port)},
        labels={"io.pipes-docker.test": "restartable-engine"},
        detach=True,
        **dind_container_kwargs(network_mode="host"),
    )
    address = f"tcp://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers_ping(address), 60, f"the restartable engine at {address}")
        with contextlib.closing(docker.DockerClient(base_url=address)) as engine:
            load_images(docker_client, engine)
        yield container, address
    finally:
        container.remove(force=True, v=True)


def test_an_engine_restart_mid_run_fails_clearly_and_leaves_nothing(
    restartable_engine: tuple[Any, str], run_asset: RunAsset, tmp_path: Path
) -> None:
    dind, address = restartable_engine
    engine = docker.DockerClient(base_url=address)
    code = """
import time
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.log.info("started")
    for i in range(120):
        print(f"tick {i}", flush=True)
        time.sleep(0.5)
"""
    client = PipesDockerClient(
        docker_client=engine,
        channel=PipesDockerStreamedChannel(),
        container_kwargs={"network_mode": "none"},
        log_dir=str(tmp_path / "logs"),
        termination_timeout_seconds=2,
    )

    def restart_dockerd_after_the_first_ticks() -> None:
        wait_until(
            lambda: any(
                "tick 2" in p.read_text() for p in (tmp_path / "logs").glob("*/stdout.log")
            ),
            60,
            "the job's first ticks",
        )
        dind.exec_run(["pkill", "-TERM", "-x", "dockerd"])

    restarter = threading.Thread(target=restart_dockerd_after_the_first_ticks, daemon=True)
    restarter.start()
    run = run_asset(client, code)  # pytest-timeout fails the test if this hangs
    restarter.join(5)

    assert not run.success
    assert "while the container was still running (was the engine restarted?)" in run.error
    assert "started" in run.log_messages()
    ticks = next((tmp_path / "logs").glob("*/stdout.log")).read_text().splitlines()
    assert len(ticks) < 100  # failed when the stream broke, not after the job's natural end
    wait_until(lambda: answers_ping(address), 60, "the restarted engine")
    leftovers = engine.containers.list(all=True, filters={"label": MANAGED_LABEL})
    assert leftovers == [], [c.name for c in leftovers]
    engine.close()
