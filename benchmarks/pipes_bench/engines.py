"""Where a suite's runs go, and what they left there.

* ``local``: the engine of the environment (its unix socket), for every suite;
* ``dind`` (suite ``transports``): a Docker-in-Docker engine on ``tcp://127.0.0.1:PORT`` that
  shares no files with us, started from the image and settings of the integration tests'
  ``dind`` service (``tests.integration.engines``), the test image loaded into it;
* ``manager`` and ``worker`` (suite ``swarm``): the two-node Swarm the integration tests build
  (``tests.integration.swarm.two_node_swarm``), reached through unix sockets on the host.

Each is brought up before the suite's first measurement and always taken down after its last,
on errors, Ctrl-C and SIGTERM too. Runners find an engine's address in ``Engines.urls``.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .scenarios import IMAGE

LABEL_SESSION = "pipes-docker-bench.session"
LABEL_RUNNER = "pipes-docker-bench.runner"
DIND_IMAGE = "pipes-docker-dind:latest"


def docker_ids(url: str | None, *filters: str) -> list[str]:
    cmd = ["docker", *(["-H", url] if url else []), "ps", "-a", "-q", "--no-trunc"]
    for f in filters:
        cmd += ["--filter", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    return out.split()


def remove_containers(url: str | None, ids: list[str]) -> None:
    if ids:
        cmd = ["docker", *(["-H", url] if url else []), "rm", "-f", "-v", *ids]
        subprocess.run(cmd, capture_output=True, check=False, timeout=300)


@dataclass
class Engines:
    """The engines of one suite: ``urls`` (``None``: the environment's engine) and, for the
    Swarm suite, the cluster (``tests.integration.swarm.SwarmCluster``)."""

    urls: dict[str, str | None] = field(default_factory=lambda: {"local": None})
    cluster: Any = None
    swarm_worker: str | None = None
    versions: dict[str, str] = field(default_factory=dict)

    def left_behind(self, engine: str, session: str, runner: str) -> tuple[int, int]:
        """Count and remove what a runner's measured runs and warm-ups left on ``engine``."""
        if self.cluster is not None and engine in ("manager", "worker"):
            return self._left_on_swarm(), 0
        url = self.urls[engine]
        found = [
            docker_ids(url, f"label={LABEL_SESSION}={session}", f"label={LABEL_RUNNER}={name}")
            for name in (runner, runner + "-warmup")
        ]
        remove_containers(url, found[0] + found[1])
        return len(found[0]), len(found[1])

    def _left_on_swarm(self) -> int:
        """Services, configs and containers of pipes-docker or the bench on the cluster.

        A run's service is gone when ``run()`` returns; the node removes the ended task's
        container a few seconds later, so that is waited for (up to 30 s, as the tests do).
        """
        from pipes_docker import MANAGED_LABEL

        manager, worker = self.cluster.manager, self.cluster.worker
        deadline = time.monotonic() + 30
        while True:
            found: list[Any] = []
            for label in (MANAGED_LABEL, LABEL_SESSION):
                found += manager.services.list(filters={"label": label})
                found += manager.configs.list(filters={"label": label})
                for client in (manager, worker):
                    found += client.containers.list(all=True, filters={"label": label})
            if not found or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        for item in found:
            with contextlib.suppress(Exception):
                item.remove(**({"force": True} if hasattr(item, "kill") else {}))
        return len(found)


def engine_version(client: Any) -> str:
    found = client.version()
    return f"{found.get('Version', '?')} (API {found.get('ApiVersion', '?')})"


@contextlib.contextmanager
def dind(source: Any, session: str, preferred_port: int) -> Iterator[str]:
    """A DinD engine container on the host network; yields its ``tcp://`` address."""
    import docker

    from tests.integration.engines import (
        answers_ping,
        dind_container_kwargs,
        free_port,
        wait_until,
    )

    port = free_port(preferred_port)
    address = f"tcp://127.0.0.1:{port}"
    container = source.containers.run(
        DIND_IMAGE,
        detach=True,
        name=f"pipes-docker-bench-dind-{session}",
        environment={"DOCKER_PORT": str(port), "SSH_DIR": "/nonexistent"},  # no sshd
        labels={LABEL_SESSION: session},
        **dind_container_kwargs("host"),
    )
    try:

        def up() -> bool:
            container.reload()
            if container.status == "exited":
                logs = container.logs(tail=20).decode(errors="replace")
                raise RuntimeError(f"the DinD engine exited:\n{logs}")
            return answers_ping(address)

        wait_until(up, 60, address)
        with contextlib.closing(docker.DockerClient(base_url=address, timeout=300)) as remote:
            remote.images.load(source.images.get(IMAGE).save(named=IMAGE))
        yield address
    finally:
        container.remove(force=True, v=True)


@contextlib.contextmanager
def engines_for(suite: str, engines: set[str], session: str, dind_port: int) -> Iterator[Engines]:
    """The engines the chosen runners need (``engines``: their keys), up for the suite."""
    import docker

    found = Engines()
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(contextlib.closing(docker.from_env(timeout=300)))
        found.versions["docker-engine"] = engine_version(source)
        if "dind" in engines:
            print("[bench] starting the DinD engine ...", flush=True)
            found.urls["dind"] = stack.enter_context(dind(source, session, dind_port))
            with contextlib.closing(docker.DockerClient(base_url=found.urls["dind"])) as c:
                found.versions["dind-engine"] = engine_version(c)
        if engines & {"manager", "worker"}:
            from tests.integration.swarm import two_node_swarm

            print("[bench] building the two-node Swarm ...", flush=True)
            cluster = stack.enter_context(two_node_swarm(source))
            found.cluster, found.swarm_worker = cluster, cluster.worker_hostname
            found.urls.update(manager=cluster.manager_url, worker=cluster.worker_url)
            found.versions["swarm-node-engine"] = engine_version(cluster.manager)
        yield found
