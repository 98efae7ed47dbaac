"""Fixtures for Docker engines other than the host's: a remote engine, the same over SSH, Podman.

Imported by tests/integration/conftest.py (``from ... import *``). All fixtures are session-scoped:

- ``remote_engine``: a Docker engine in a container (docker-compose.test.yml, service ``dind``,
  brought up by pytest-docker) at tcp://127.0.0.1:23750. It shares no filesystem with the host:
  a bind mount names a path inside *its* container.
- ``ssh_engine``: that engine at ssh://root@127.0.0.1:2222, through docker-py's paramiko
  transport (the remote side runs ``docker system dial-stdio``).
- ``podman_engine``: Podman's Docker-compatible API on a unix socket in a session temp dir, with
  its own storage. It shares the host's filesystem.

Each has the test images loaded (``IMAGES``) and carries ``container_kwargs``, the keywords every
container on it needs (network none; for Podman also ulimits). Bringing an engine up either
works or fails the tests with the reason and the engine's last log lines; it never skips.
Teardown removes every container on the engine, then the engine (compose ``down -v``; the Podman
service and its storage).

Ports: ``PIPES_DOCKER_DIND_PORT`` and ``PIPES_DOCKER_DIND_SSH_PORT`` when set; otherwise 23750
and 2222, or a free port when one of those is taken (another test session, say).
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import paramiko
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pytest_docker.plugin import DockerComposeExecutor, Services

# What conftest.py imports: the fixtures (pytest_plugins may not be set in a non-top-level
# conftest) and the types and helpers tests use.
__all__ = [
    "DindProject",
    "DindSettings",
    "RemoteEngine",
    "SshEngine",
    "dind",
    "dind_settings",
    "docker_cleanup",
    "docker_compose_command",
    "docker_compose_file",
    "docker_setup",
    "network_names",
    "podman_engine",
    "remote_engine",
    "remove_containers",
    "ssh_engine",
]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.test.yml"
DIND_SERVICE = "dind"
DIND_IMAGE = "pipes-docker-dind:latest"
TEST_IMAGE = "pipes-docker-testjob:latest"
BASE_IMAGE = "python:3.11-slim-bookworm"
IMAGES = (TEST_IMAGE, BASE_IMAGE)

# Podman's default rlimits are refused on this machine ("error setting rlimit type 7/6").
PODMAN_ULIMITS = (
    docker.types.Ulimit(name="nofile", soft=1024, hard=1024),
    docker.types.Ulimit(name="nproc", soft=1024, hard=1024),
)
UP_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class RemoteEngine:
    """A Docker API endpoint other than the host's engine.

    ``container_kwargs`` holds the docker-py ``containers.create`` keywords every container on
    this engine needs; merge it into yours (do not change it in place).
    """

    name: str
    client: docker.DockerClient
    address: str
    shares_host_filesystem: bool
    container_kwargs: dict[str, Any] = field(default_factory=lambda: {"network_mode": "none"})


@dataclass(frozen=True)
class SshEngine(RemoteEngine):
    """The DinD engine over SSH. ``address`` holds no credentials: the key is found through
    ``home``, a stand-in home dir (see ``ssh_engine``), which ``environment()`` and
    ``new_client()`` put in place."""

    home: Path = Path()

    def environment(self) -> contextlib.AbstractContextManager[None]:
        """HOME and DOCKER_HOST set for this engine, e.g. around ``docker.from_env()``."""
        return ssh_environment(self.address, self.home)

    def new_client(self) -> docker.DockerClient:
        return ssh_client(self.address, self.home)


@contextlib.contextmanager
def ssh_environment(address: str, home: Path) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        patch.setenv("DOCKER_HOST", address)
        yield


def ssh_client(address: str, home: Path) -> docker.DockerClient:
    """A client over docker-py's paramiko transport, which connects while it is constructed."""
    with ssh_environment(address, home):
        return docker.DockerClient(base_url=address, use_ssh_client=False)


@dataclass(frozen=True)
class DindSettings:
    """What the compose project is brought up with (the env vars docker-compose.test.yml reads)."""

    port: int
    ssh_port: int
    ssh_dir: Path  # mounted at /ssh: authorized_keys and the sshd host key
    ssh_home: Path  # a home dir whose .ssh/ holds the client key, config, known_hosts
    host_networks_before: frozenset[str]


@dataclass(frozen=True)
class DindProject:
    settings: DindSettings
    services: Services
    compose: DockerComposeExecutor


def network_names(client: docker.DockerClient) -> set[str]:
    """The names `docker network ls` shows on this engine."""
    return {network.name for network in client.networks.list()}


def remove_containers(client: docker.DockerClient) -> list[str]:
    """Remove every container on the engine; return their names."""
    removed = []
    for container in client.containers.list(all=True, ignore_removed=True):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
        removed.append(container.name)
    return removed


def load_images(source: docker.DockerClient, target: docker.DockerClient) -> None:
    """Copy IMAGES from one engine to another (docker save | docker load, streamed)."""
    for image in IMAGES:
        target.images.load(source.images.get(image).save(named=image))
    for image in IMAGES:
        target.images.get(image)


def dind_container_kwargs(network_mode: str) -> dict[str, Any]:
    """docker-py ``containers.run`` keywords for a DinD engine container, taken from
    docker-compose.test.yml's ``dind`` service (capabilities, security options, tmpfs mounts) so
    they are written down once, plus the cgroup mount and the given network mode."""
    service = yaml.safe_load(COMPOSE_FILE.read_text())["services"][DIND_SERVICE]
    tmpfs = {}
    for entry in service.get("tmpfs", []):
        path, _, options = entry.partition(":")
        tmpfs[path] = options
    return {
        "cap_add": service["cap_add"],
        "security_opt": service["security_opt"],
        "tmpfs": tmpfs,
        "volumes": {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}},
        "network_mode": network_mode,
    }


def compose_logs(compose: DockerComposeExecutor, lines: int = 30) -> str:
    try:
        return compose.execute(f"logs --no-color --tail {lines} {DIND_SERVICE}").decode()
    except Exception as exc:
        return f"(no logs: {exc})"


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` until it is true; it may raise to give up early."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not answer within {timeout:.0f} s")
        time.sleep(0.2)


def answers_ping(base_url: str, **kwargs: Any) -> bool:
    try:
        with contextlib.closing(docker.DockerClient(base_url=base_url, timeout=5, **kwargs)) as c:
            return bool(c.ping())
    except (docker.errors.DockerException, OSError):
        return False


def _port(env_var: str, preferred: int) -> int:
    if os.environ.get(env_var):
        return int(os.environ[env_var])
    return free_port(preferred)


def free_port(preferred: int) -> int:
    """``preferred`` when it is free on 127.0.0.1, else any free port there."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise RuntimeError("no free port on 127.0.0.1")


def _write_key_pair(private_path: Path) -> str:
    """Write a new ed25519 key in OpenSSH format (0600) and its .pub; return the public line."""
    key = Ed25519PrivateKey.generate()
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    private_path.chmod(0o600)
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    private_path.with_name(private_path.name + ".pub").write_text(public + "\n")
    return public


# --- pytest-docker's fixtures, set for docker-compose.test.yml -----------------------------------


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    return "docker-compose"  # Debian ships compose v1 only


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_setup(dind_settings: DindSettings) -> list[str]:
    # It asks for dind_settings so that the env vars compose reads are set before `up`.
    # No --build (images/build.sh builds the image), no --wait (compose v1 lacks it): the
    # `dind` fixture waits for the engine itself.
    return ["up -d"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return ["down -v"]


# --- the engines ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dind_settings(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DindSettings]:
    """Ports, SSH keys and the env vars for compose; and the host's networks before compose."""
    try:
        docker_client.images.get(DIND_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"Image {DIND_IMAGE} is missing: run images/build.sh", pytrace=False)
    host_networks_before = frozenset(network_names(docker_client))
    ssh_dir = tmp_path_factory.mktemp("dind-ssh")
    ssh_home = tmp_path_factory.mktemp("dind-ssh-home")
    settings = DindSettings(
        port=_port("PIPES_DOCKER_DIND_PORT", 23750),
        ssh_port=_port("PIPES_DOCKER_DIND_SSH_PORT", 2222),
        ssh_dir=ssh_dir,
        ssh_home=ssh_home,
        host_networks_before=host_networks_before,
    )
    # The server: a host key made here, so known_hosts is written before sshd starts.
    host_public = _write_key_pair(ssh_dir / "ssh_host_ed25519_key")
    # The client: its key, the config that names it, and known_hosts, under ssh_home/.ssh.
    dot_ssh = ssh_home / ".ssh"
    dot_ssh.mkdir(mode=0o700)
    identity = dot_ssh / "id_ed25519"
    (ssh_dir / "authorized_keys").write_text(_write_key_pair(identity) + "\n")
    (dot_ssh / "config").write_text(f"Host 127.0.0.1\n    IdentityFile {identity}\n")
    (dot_ssh / "known_hosts").write_text(f"[127.0.0.1]:{settings.ssh_port} {host_public}\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIPES_DOCKER_DIND_PORT", str(settings.port))
        patch.setenv("PIPES_DOCKER_DIND_SSH_PORT", str(settings.ssh_port))
        patch.setenv("PIPES_DOCKER_DIND_SSH_DIR", str(ssh_dir))
        yield settings


@pytest.fixture(scope="session")
def dind(
    request: pytest.FixtureRequest,
    dind_settings: DindSettings,
    docker_client: docker.DockerClient,
    docker_compose_command: str,
    docker_compose_file: str,
    docker_compose_project_name: str,
) -> Iterator[DindProject]:
    """The compose project up, its engine answering, the test images loaded into it."""
    compose = DockerComposeExecutor(
        docker_compose_command, docker_compose_file, docker_compose_project_name
    )
    address = f"tcp://127.0.0.1:{dind_settings.port}"

    def engine_answers() -> bool:
        containers = docker_client.containers.list(
            all=True,
            filters={"label": f"com.docker.compose.project={docker_compose_project_name}"},
        )
        if containers and all(container.status == "exited" for container in containers):
            raise RuntimeError("its container exited")
        return answers_ping(address)

    reason = None
    try:
        services: Services = request.getfixturevalue("docker_services")
        wait_until(engine_answers, UP_TIMEOUT_SECONDS, address)
        with contextlib.closing(docker.DockerClient(base_url=address, timeout=120)) as client:
            load_images(docker_client, client)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
    if reason is not None:
        logs = compose_logs(compose)
        # pytest-docker's own cleanup does not run when `up` fails.
        with contextlib.suppress(Exception):
            compose.execute("down -v")
        pytest.fail(
            f"The DinD engine ({COMPOSE_FILE.name}, {address}) did not come up: {reason}\n"
            f"Last log lines:\n{logs}",
            pytrace=False,
        )
    yield DindProject(dind_settings, services, compose)
    with contextlib.closing(docker.DockerClient(base_url=address)) as client:
        remove_containers(client)


@pytest.fixture(scope="session")
def remote_engine(dind: DindProject) -> Iterator[RemoteEngine]:
    """The DinD engine over TCP: shares no filesystem with the host."""
    address = f"tcp://127.0.0.1:{dind.settings.port}"
    client = docker.DockerClient(base_url=address)
    engine = RemoteEngine(
        name="dind-tcp", client=client, address=address, shares_host_filesystem=False
    )
    yield engine
    remove_containers(client)
    client.close()


@pytest.fixture(scope="session")
def ssh_engine(dind: DindProject) -> Iterator[SshEngine]:
    """The DinD engine over SSH (docker-py's paramiko transport, ``use_ssh_client=False``).

    docker-py gives paramiko no key and no host key of its own: it reads ``~/.ssh/config``
    (IdentityFile, User, Port) and ``~/.ssh/known_hosts`` and rejects unknown host keys
    (``RejectPolicy``), all while the client is constructed, where it also connects. So HOME
    points at a stand-in home (``dind_settings.ssh_home``) only while the client is made; the
    config names the key by absolute path, and the loaded host keys stay with the client, so a
    reconnect after HOME is restored still works. The sshd host key is made by the fixture
    (mounted into the container), so known_hosts is exact: no trust on first use, no scan.
    """
    settings = dind.settings
    address = f"ssh://root@127.0.0.1:{settings.ssh_port}"
    clients: list[docker.DockerClient] = []
    errors: list[Exception] = []

    def connects() -> bool:  # sshd may answer a moment after dockerd
        try:
            clients.append(ssh_client(address, settings.ssh_home))
        except (docker.errors.DockerException, OSError, paramiko.SSHException) as exc:
            errors.append(exc)
            return False
        return True

    reason = None
    try:
        wait_until(connects, UP_TIMEOUT_SECONDS, address)
    except TimeoutError as exc:
        reason = f"{exc}; last error: {errors[-1]!r}" if errors else str(exc)
    if reason is not None:
        pytest.fail(
            f"The DinD engine over SSH did not answer: {reason}\n"
            f"Last log lines:\n{compose_logs(dind.compose)}",
            pytrace=False,
        )
    (client,) = clients
    engine = SshEngine(
        name="dind-ssh",
        client=client,
        address=address,
        shares_host_filesystem=False,
        home=settings.ssh_home,
    )
    yield engine
    remove_containers(client)
    client.close()


@pytest.fixture(scope="session")
def podman_engine(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RemoteEngine]:
    """Podman's Docker-compatible API (``podman system service``) with its own storage.

    Storage, run root and tmp dir live in a session temp dir, so the host's Podman storage is
    not touched; the storage driver is Podman's configured default (overlay here). Teardown
    removes the containers, stops the service and runs ``podman system reset``, which also
    undoes the storage's own mount (the service leaves it mounted when it stops) and deletes
    the dirs.
    """
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: run scripts/setup.sh", pytrace=False)
    work = tmp_path_factory.mktemp("podman")
    sock = work / "podman.sock"
    address = f"unix://{sock}"
    log_path = work / "service.log"
    podman = [
        "podman",
        "--root", str(work / "root"),
        "--runroot", str(work / "run"),
        "--tmpdir", str(work / "tmp"),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        service = subprocess.Popen(
            [*podman, "system", "service", "--time=0", address],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def service_answers() -> bool:
        if service.poll() is not None:
            raise RuntimeError(f"podman system service exited with {service.returncode}")
        return sock.exists() and answers_ping(address)

    def shut_down() -> None:
        _stop(service)
        # The service leaves its storage mounted when it stops; reset unmounts and deletes it.
        reset = [*podman, "system", "reset", "--force"]
        subprocess.run(reset, capture_output=True, timeout=60, check=False)

    client = None
    reason = None
    try:
        wait_until(service_answers, UP_TIMEOUT_SECONDS, address)
        client = docker.DockerClient(base_url=address, timeout=120)
        load_images(docker_client, client)
    except BaseException as exc:
        if client is not None:
            client.close()
        shut_down()
        if not isinstance(exc, Exception):
            raise
        reason = f"{type(exc).__name__}: {exc}"
    if reason is not None:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        pytest.fail(
            f"Podman ({address}) did not come up: {reason}\nLast log lines:\n{tail}",
            pytrace=False,
        )
    yield RemoteEngine(
        name="podman",
        client=client,
        address=address,
        shares_host_filesystem=True,
        container_kwargs={"network_mode": "none", "ulimits": list(PODMAN_ULIMITS)},
    )
    try:
        remove_containers(client)
    finally:
        client.close()
        shut_down()
        shutil.rmtree(work, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
