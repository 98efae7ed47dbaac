"""The extra engines' fixtures (engines.py) work, shown with plain docker-py: no pipes_docker."""

from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import pytest

from tests.integration.engines import (
    TEST_IMAGE,
    DindProject,
    RemoteEngine,
    SshEngine,
    network_names,
)

ENGINES = ["remote_engine", "ssh_engine", "podman_engine"]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> RemoteEngine:
    return request.getfixturevalue(request.param)


def run(engine: RemoteEngine, code: str, **kwargs: Any) -> tuple[int, bytes, bytes]:
    """Run ``python -c code`` on the engine; return exit code, stdout, stderr. Leaves nothing."""
    container = engine.client.containers.create(
        TEST_IMAGE, ["python", "-c", code], **{**engine.container_kwargs, **kwargs}
    )
    try:
        container.start()
        status = container.wait(timeout=60)["StatusCode"]
        return status, container.logs(stderr=False), container.logs(stdout=False)
    finally:
        container.remove(force=True)


def test_runs_a_container_and_leaves_none(engine: RemoteEngine) -> None:
    # init=True is pipes-docker's default: docker-init (DinD), catatonit (Podman).
    assert run(engine, "import sys; print('hi'); print('err', file=sys.stderr)", init=True) == (
        0,
        b"hi\n",
        b"err\n",
    )
    assert engine.client.containers.list(all=True) == []


def test_each_engine_has_the_test_image(engine: RemoteEngine) -> None:
    image = engine.client.images.get(TEST_IMAGE)
    assert image.attrs["Config"]["Env"]
    assert "PYTHONPATH=/opt/pipes" in image.attrs["Config"]["Env"]


def test_compose_creates_no_network(dind: DindProject, docker_client: docker.DockerClient) -> None:
    # The "before" set was taken before `docker-compose up`.
    assert network_names(docker_client) == dind.settings.host_networks_before
    assert {"bridge", "host", "none"} >= dind.settings.host_networks_before


@pytest.mark.parametrize("name", ["remote_engine", "ssh_engine"])
def test_remote_engine_does_not_see_host_files(
    request: pytest.FixtureRequest, name: str, tmp_path: Path
) -> None:
    remote: RemoteEngine = request.getfixturevalue(name)
    assert not remote.shares_host_filesystem
    mount = docker.types.Mount(target="/data", source=str(tmp_path), type="bind")
    with pytest.raises(docker.errors.APIError, match="bind source path does not exist"):
        remote.client.containers.create(TEST_IMAGE, mounts=[mount], **remote.container_kwargs)
    assert remote.client.containers.list(all=True) == []


def test_podman_sees_host_files(podman_engine: RemoteEngine, tmp_path: Path) -> None:
    assert podman_engine.shares_host_filesystem
    (tmp_path / "hello.txt").write_text("from the host")
    mount = docker.types.Mount(target="/data", source=str(tmp_path), type="bind", read_only=True)
    code = "print(open('/data/hello.txt').read())"
    assert run(podman_engine, code, mounts=[mount]) == (0, b"from the host\n", b"")


def test_ssh_engine_is_the_remote_engine(
    ssh_engine: SshEngine, remote_engine: RemoteEngine
) -> None:
    assert ssh_engine.address.startswith("ssh://root@127.0.0.1:")
    assert ssh_engine.client.info()["ID"] == remote_engine.client.info()["ID"]


def test_ssh_engine_environment_serves_from_env(ssh_engine: SshEngine) -> None:
    with ssh_engine.environment():
        client = docker.from_env()
    try:
        assert client.info()["ID"] == ssh_engine.client.info()["ID"]
    finally:
        client.close()
