"""A real two-node Docker Swarm on this machine: ``two_node_swarm()`` and the ``swarm`` fixture.

Imported by tests/integration/conftest.py (``from ... import *``).

Each node is a Docker-in-Docker container (image pipes-docker-swarm-node, Engine 26; the
capabilities, security options and tmpfs mounts of docker-compose.test.yml's ``dind``
service) with network ``none``: its own network namespace, so the bridges, the ingress overlay
and every address Swarm makes stay inside it. Its dockerd listens only on a unix socket in a
host dir (a fresh ``tempfile.mkdtemp`` per node) bind-mounted at /sock. A veth pair joins the
two namespaces: one end is moved into each, 10.99.0.1/24 on the manager and 10.99.0.2/24 on
the worker. The host's own namespace gets no address and no bridge; it holds the veth pair only
until its ends are moved.

Teardown (also when setup fails half-way) closes the clients, removes both containers (their
namespaces and the veth ends in them go too), deletes a veth end that never left the host
namespace, removes the socket dirs, and then asserts that none of these is left.

Tests that create services on ``swarm`` must remove them: the cluster is shared by the session.
Services should use the ``host`` network (inside the node's namespace): the Engine 26 nodes
cannot set up a bridge endpoint here (they fail to disable IPv6 on it).
"""

import contextlib
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from tests.integration.engines import (
    TEST_IMAGE,
    answers_ping,
    dind_container_kwargs,
    wait_until,
)

__all__ = ["SWARM_NODE_IMAGE", "SwarmCluster", "swarm", "two_node_swarm"]

NODE_LABEL = ("io.pipes-docker.test", "swarm-node")
CLUSTER_LABEL = "io.pipes-docker.swarm-cluster"  # its value: the cluster's tag
# Debian trixie's Engine 26 (images/swarm-node/): its managers remove a replicated-job
# service's tasks with it, which Engine 20.10 (pipes-docker-dind, Debian bookworm's) does not.
SWARM_NODE_IMAGE = "pipes-docker-swarm-node:latest"
LINK_PREFIX = "pdsw"  # + 8 hex + a/b: 13 characters, within the kernel's 15
MANAGER_ADDRESS = "10.99.0.1"
WORKER_ADDRESS = "10.99.0.2"
PREFIX_LENGTH = 24
SWARM_PORT = 2377
UP_TIMEOUT_SECONDS = 60
CLIENT_TIMEOUT_SECONDS = 120  # an image load into vfs storage takes a while
LINK_GONE_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class SwarmCluster:
    """A running two-node Swarm: one manager, one worker, both Ready, the test image on both.

    ``manager`` and ``worker`` are clients of the nodes' engines (at ``manager_url`` and
    ``worker_url``, unix sockets on the host); the hostnames are the nodes' names in the Swarm
    (and their containers' names on the host engine). ``veth_names`` and ``socket_dirs`` say
    what teardown removes, for tests that check it did.
    """

    manager: docker.DockerClient
    worker: docker.DockerClient
    manager_url: str
    worker_url: str
    manager_hostname: str
    worker_hostname: str
    manager_node_id: str
    worker_node_id: str
    veth_names: tuple[str, str]
    socket_dirs: tuple[Path, Path]


@dataclass
class _Parts:
    """What setup has made so far: what teardown must undo."""

    tag: str
    socket_dirs: list[Path] = field(default_factory=list)
    clients: list[docker.DockerClient] = field(default_factory=list)
    links_in_host: list[str] = field(default_factory=list)

    @property
    def names(self) -> tuple[str, str]:
        return f"pipes-swarm-{self.tag}-manager", f"pipes-swarm-{self.tag}-worker"

    @property
    def links(self) -> tuple[str, str]:
        return f"{LINK_PREFIX}{self.tag}a", f"{LINK_PREFIX}{self.tag}b"


@contextlib.contextmanager
def two_node_swarm(
    source: docker.DockerClient,
    *,
    image: str = SWARM_NODE_IMAGE,
    timeout: float = UP_TIMEOUT_SECONDS,
) -> Iterator[SwarmCluster]:
    """Build a two-node Swarm on the engine ``source`` (which has the node and test images),
    yield it, tear it down. A setup failure raises with the nodes' last log lines attached.

    ``image`` runs each node's dockerd: the Engine 26 node image by default, or the older DinD
    image (Engine 20.10) for tests of managers that predate cleaned-up jobs.
    """
    parts = _Parts(tag=secrets.token_hex(4))
    try:
        try:
            cluster = _build(source, parts, timeout, image)
        except Exception as exc:
            exc.add_note(_node_logs(source, parts.tag))
            raise
        yield cluster
    finally:
        _tear_down(source, parts)


@pytest.fixture(scope="session")
def swarm(docker_client: docker.DockerClient) -> Iterator[SwarmCluster]:
    """A two-node Swarm for the session (see ``two_node_swarm``); it comes up or fails."""
    try:
        docker_client.images.get(SWARM_NODE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"Image {SWARM_NODE_IMAGE} is missing: run images/build.sh", pytrace=False)
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(two_node_swarm(docker_client))
        except Exception as exc:
            reason = "".join(traceback.format_exception_only(exc)).strip()
            pytest.fail(f"The two-node Swarm did not come up: {reason}", pytrace=False)
        yield cluster


# --- setup ---------------------------------------------------------------------------------------


def _build(source: docker.DockerClient, parts: _Parts, timeout: float, image: str) -> SwarmCluster:
    manager_name, worker_name = parts.names
    containers = []
    for name in parts.names:
        socket_dir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        parts.socket_dirs.append(socket_dir)
        containers.append(_start_node(source, name, socket_dir, parts.tag, image))
    manager_url, worker_url = (f"unix://{path}/docker.sock" for path in parts.socket_dirs)
    for container, url in zip(containers, (manager_url, worker_url), strict=True):
        _wait_for_engine(container, url, timeout)
    manager = docker.DockerClient(base_url=manager_url, timeout=CLIENT_TIMEOUT_SECONDS)
    parts.clients.append(manager)
    worker = docker.DockerClient(base_url=worker_url, timeout=CLIENT_TIMEOUT_SECONDS)
    parts.clients.append(worker)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="swarm-image-load") as loader:
        # The image loads (the slow part: vfs copies every layer) run while the Swarm forms.
        loads = [loader.submit(_load_test_image, source, client) for client in (manager, worker)]
        _link(containers, parts)
        manager_node_id, worker_node_id = _form_swarm(manager, worker, timeout)
        for load in loads:
            load.result()

    return SwarmCluster(
        manager=manager,
        worker=worker,
        manager_url=manager_url,
        worker_url=worker_url,
        manager_hostname=manager_name,
        worker_hostname=worker_name,
        manager_node_id=manager_node_id,
        worker_node_id=worker_node_id,
        veth_names=parts.links,
        socket_dirs=(parts.socket_dirs[0], parts.socket_dirs[1]),
    )


def _form_swarm(
    manager: docker.DockerClient, worker: docker.DockerClient, timeout: float
) -> tuple[str, str]:
    """Init the Swarm on the manager, join the worker, wait until both are Ready; their ids."""
    manager.swarm.init(
        advertise_addr=MANAGER_ADDRESS, listen_addr=f"{MANAGER_ADDRESS}:{SWARM_PORT}"
    )
    manager.swarm.reload()
    worker.swarm.join(
        remote_addrs=[f"{MANAGER_ADDRESS}:{SWARM_PORT}"],
        join_token=manager.swarm.attrs["JoinTokens"]["Worker"],
        advertise_addr=WORKER_ADDRESS,
        listen_addr=f"{WORKER_ADDRESS}:{SWARM_PORT}",
    )
    node_ids = (str(manager.info()["Swarm"]["NodeID"]), str(worker.info()["Swarm"]["NodeID"]))
    wait_until(lambda: _ready_nodes(manager) == set(node_ids), timeout, "both Swarm nodes Ready")
    return node_ids


def _load_test_image(source: docker.DockerClient, target: docker.DockerClient) -> None:
    """Only the test job image: engines.load_images also copies the base image, which the test
    image's layers already hold."""
    target.images.load(source.images.get(TEST_IMAGE).save(named=TEST_IMAGE))
    target.images.get(TEST_IMAGE)


def _start_node(
    source: docker.DockerClient, name: str, socket_dir: Path, tag: str, image: str
) -> Any:
    kwargs = dind_container_kwargs(network_mode="none")
    volumes = {**kwargs.pop("volumes"), str(socket_dir): {"bind": "/sock", "mode": "rw"}}
    return source.containers.run(
        image,
        entrypoint=["dockerd"],
        command=["--host", "unix:///sock/docker.sock", "--storage-driver", "vfs"],
        name=name,
        hostname=name,
        labels={NODE_LABEL[0]: NODE_LABEL[1], CLUSTER_LABEL: tag},
        volumes=volumes,
        detach=True,
        **kwargs,
    )


def _wait_for_engine(container: Any, url: str, timeout: float) -> None:
    def answers() -> bool:
        container.reload()
        if container.status not in ("created", "running"):
            raise RuntimeError(f"the Swarm node {container.name} is {container.status}")
        return _accepts_connections(url.removeprefix("unix://")) and answers_ping(url)

    wait_until(answers, timeout, f"the Swarm node {container.name} at {url}")


def _accepts_connections(socket_path: str) -> bool:
    """Whether a unix socket is listened on. Asked before docker-py connects: its unix transport
    leaks the socket when connect() fails (docker/docker-py#3356), which a ResourceWarning
    reports, and this project turns warnings into errors."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(socket_path)
        except OSError:
            return False
    return True


def _link(containers: list[Any], parts: _Parts) -> None:
    """A veth pair from the manager's network namespace to the worker's."""
    manager_pid, worker_pid = (_netns_pid(container) for container in containers)
    manager_link, worker_link = parts.links
    taken = set(parts.links) & host_link_names()
    if taken:  # not ours: leave them be
        raise RuntimeError(f"host links named {sorted(taken)} exist already")
    parts.links_in_host.extend(parts.links)  # from here on teardown deletes them if present
    _run(["ip", "link", "add", manager_link, "type", "veth", "peer", "name", worker_link])
    for pid, link, address in (
        (manager_pid, manager_link, MANAGER_ADDRESS),
        (worker_pid, worker_link, WORKER_ADDRESS),
    ):
        _run(["ip", "link", "set", link, "netns", str(pid)])
        parts.links_in_host.remove(link)
        # Only ever inside the node's namespace (nsenter -n), never in the host's.
        _in_netns(pid, "addr", "add", f"{address}/{PREFIX_LENGTH}", "dev", link)
        _in_netns(pid, "link", "set", link, "up")
        _in_netns(pid, "link", "set", "lo", "up")


def _netns_pid(container: Any) -> int:
    """The pid of the container's init, after checking its network namespace is not the host's."""
    container.reload()
    pid = int(container.attrs["State"]["Pid"])
    if pid <= 0:
        raise RuntimeError(f"the Swarm node {container.name} is not running")
    if os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net"):
        raise RuntimeError(f"the Swarm node {container.name} shares the host's network namespace")
    return pid


def _in_netns(pid: int, *ip_args: str) -> None:
    _run(["nsenter", "-t", str(pid), "-n", "ip", *ip_args])


def _ready_nodes(manager: docker.DockerClient) -> set[str]:
    return {
        str(node.id) for node in manager.nodes.list() if node.attrs["Status"]["State"] == "ready"
    }


# --- teardown ------------------------------------------------------------------------------------


def _tear_down(source: docker.DockerClient, parts: _Parts) -> None:
    """Undo whatever setup made; every step runs even when one before it fails."""
    errors: list[str] = []

    def attempt(step: str, action: Callable[..., object], *args: object) -> None:
        try:
            action(*args)
        except Exception as exc:
            errors.append(f"{step}: {type(exc).__name__}: {exc}")

    for client in parts.clients:
        attempt("close a client", client.close)
    # A veth end still in the host namespace (setup failed before moving it) goes first:
    # deleting it deletes its peer too, wherever that is, at once.
    for link in parts.links_in_host:
        attempt(f"delete {link}", _delete_host_link, link)
    try:
        containers = _cluster_containers(source, parts.tag)
    except Exception as exc:
        errors.append(f"list the node containers: {type(exc).__name__}: {exc}")
        containers = []
    for container in containers:
        attempt(f"remove {container.name}", _remove_container, container)
    for socket_dir in parts.socket_dirs:
        attempt(f"remove {socket_dir}", shutil.rmtree, socket_dir)
    # The kernel frees a removed container's network namespace, and the veth end in it, a
    # moment after the container is gone.
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: not _our_links(parts.tag), LINK_GONE_TIMEOUT_SECONDS, "veth removal")

    left = {
        "containers": [c.name for c in _cluster_containers(source, parts.tag)],
        "host links": sorted(_our_links(parts.tag)),
        "socket dirs": [str(path) for path in parts.socket_dirs if path.exists()],
    }
    assert not any(left.values()), f"the Swarm teardown left behind {left}; errors: {errors}"
    assert not errors, f"the Swarm teardown failed: {errors}"


def _delete_host_link(link: str) -> None:
    if link in host_link_names():
        try:
            _run(["ip", "link", "delete", link])
        except RuntimeError:
            if link in host_link_names():  # not gone with its peer's namespace meanwhile
                raise


def _remove_container(container: Any) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True, v=True)


def _cluster_containers(source: docker.DockerClient, tag: str) -> list[Any]:
    labels = [f"{NODE_LABEL[0]}={NODE_LABEL[1]}", f"{CLUSTER_LABEL}={tag}"]
    return list(source.containers.list(all=True, filters={"label": labels}, ignore_removed=True))


def host_link_names() -> set[str]:
    """The names of the network links in this process's (the host's) namespace."""
    names = set()
    for line in _run(["ip", "-o", "link", "show"]).splitlines():
        # "7: pdsw0123abcda@pdsw0123abcdb: <BROADCAST,MULTICAST> mtu 1500 ..."
        fields = line.split(":", 2)
        if len(fields) == 3:
            names.add(fields[1].strip().split("@")[0])
    return names


def _our_links(tag: str) -> set[str]:
    return {name for name in host_link_names() if name.startswith(f"{LINK_PREFIX}{tag}")}


def _node_logs(source: docker.DockerClient, tag: str, lines: int = 20) -> str:
    parts = []
    for container in _cluster_containers(source, tag):
        try:
            logs = container.logs(tail=lines).decode(errors="replace").rstrip()
        except docker.errors.DockerException as exc:
            logs = f"(no logs: {exc})"
        parts.append(f"Last log lines of {container.name} ({container.status}):\n{logs}")
    return "\n".join(parts) or "(no Swarm node container was created)"


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"`{shlex.join(argv)}` exited {result.returncode}: {result.stderr}")
    return result.stdout
