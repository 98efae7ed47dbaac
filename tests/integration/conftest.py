"""Fixtures for tests that run real containers on a real Docker engine.

A missing engine or image is an error here, never a skip: these tests are the proof that the
client works, and CI must not go green without them.
"""

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from dagster import DagsterInstance

from pipes_docker import (
    MANAGED_LABEL,
    PipesDockerClient,
    PipesDockerMountedChannel,
    PipesDockerSwarmClient,
    wait_for_removals,
)
from tests import jobs
from tests.integration.engines import *  # noqa: F403  (pytest_plugins is top-level only)
from tests.integration.swarm import *  # noqa: F403
from tests.jobs import AssetRun

TEST_IMAGE = "pipes-docker-testjob:latest"
EXAMPLE_IMAGE = "pipes-docker-example:latest"
BASE_IMAGE = "python:3.11-slim-bookworm"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(
            f"No Docker engine answers ({exc}). The integration tests need one:"
            " run scripts/setup.sh, or run only tests/unit.",
            pytrace=False,
        )
    for image in (TEST_IMAGE, EXAMPLE_IMAGE, BASE_IMAGE):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"Image {image} is missing: run images/build.sh", pytrace=False)
    yield client
    client.close()


def containers_of_this_process(client: docker.DockerClient) -> list[Any]:
    label = f"io.pipes-docker.orchestrator-pid={os.getpid()}"
    return list(
        client.containers.list(
            all=True, filters={"label": [MANAGED_LABEL + "=true", label]}, ignore_removed=True
        )
    )


@pytest.fixture(autouse=True)
def probe_answers_of_this_test(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep the probe's on-disk answers in a dir of this test: none leak in from elsewhere."""
    monkeypatch.setenv("PIPES_DOCKER_CACHE_DIR", str(tmp_path_factory.mktemp("probe-answers")))


@pytest.fixture(autouse=True)
def no_containers_left(docker_client: docker.DockerClient) -> Iterator[None]:
    """Every test must leave no container of ours behind.

    Containers of other live orchestrators on the same engine are none of our business; those
    whose orchestrator died are swept by the client's own orphan removal.
    """
    sweeper = PipesDockerClient(docker_client=docker_client)
    sweeper.remove_orphans()
    yield
    # A run that ended well removes its job in the background: let that end first.
    assert wait_for_removals(timeout=120), "a background removal did not end in 2 minutes"
    leftovers = containers_of_this_process(docker_client)
    for container in leftovers:
        container.remove(force=True)
    sweeper.remove_orphans()
    assert not leftovers, f"containers left behind: {[c.name for c in leftovers]}"


@pytest.fixture
def pipes_tmp(tmp_path: Path) -> Iterator[Path]:
    """The root for per-run temp dirs; must be empty again after every run."""
    root = tmp_path / "pipes-tmp"
    root.mkdir()
    yield root
    assert wait_for_removals(timeout=120), "a background removal did not end in 2 minutes"
    assert list(root.iterdir()) == [], "temp dirs left behind"


@pytest.fixture
def make_client(
    docker_client: docker.DockerClient, pipes_tmp: Path
) -> Callable[..., PipesDockerClient]:
    def make(**kwargs: Any) -> PipesDockerClient:
        kwargs.setdefault("docker_client", docker_client)
        kwargs.setdefault("channel", PipesDockerMountedChannel(temp_dir_root=str(pipes_tmp)))
        container_kwargs = {"network_mode": "none", **kwargs.pop("container_kwargs", {})}
        return PipesDockerClient(container_kwargs=container_kwargs, **kwargs)

    return make


@pytest.fixture
def run_asset(tmp_path: Path) -> Iterator[Callable[..., AssetRun]]:
    instances: list[DagsterInstance] = []

    def run(
        client: PipesDockerClient | PipesDockerSwarmClient,
        code: str | None = None,
        *,
        image: str = TEST_IMAGE,
        command: str | Sequence[str] | None = None,
        **run_kwargs: Any,
    ) -> AssetRun:
        if code is not None:
            command = ["python", "-c", code]
        instance = DagsterInstance.ephemeral()
        instances.append(instance)
        result = jobs.run_asset(
            client,
            instance=instance,
            raise_on_error=False,
            image=image,
            command=command,
            **run_kwargs,
        )
        return AssetRun(result, instance)

    yield run
    for instance in instances:
        instance.dispose()
