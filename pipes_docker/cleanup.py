"""The orphan sweep as one call, for the ``sweep`` command: the engine's containers, the
Swarm's services and configs, and this host's temp dirs of the mounted channel."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

from pipes_docker.backend import Backend, OwnedObject
from pipes_docker.container.backend import ContainerBackend
from pipes_docker.dockerapi.containers import DockerEngine
from pipes_docker.ownership import MANAGED_LABEL, orphans
from pipes_docker.tempdirs import orphaned_temp_dirs, remove_temp_dir
from pipes_docker.values import frozen

__all__ = ["Orphan", "sweep_everything"]


@frozen
class Orphan:
    """One thing the sweep removed (or, in a dry run, would remove)."""

    kind: str  # "container", "Swarm service", "Swarm config", "temp dir"
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


def sweep_everything(
    *,
    older_than: timedelta,
    swarm: bool = False,
    temp_dir_roots: Sequence[str | None] = (None,),
    dry_run: bool = False,
    containers: Backend | None = None,
    services: Backend | None = None,
) -> list[Orphan]:
    """Remove (or with ``dry_run`` only list) what dead orchestrators left behind.

    ``containers`` and ``services`` default to the engine ``DOCKER_HOST`` names; ``services``
    is swept only with ``swarm``. Temp dirs are removed after the containers: a dir goes only
    once no job of its orchestrator is left that a retry could adopt.

    Raises:
        PipesDockerEngineError: The engine could not be reached.
    """
    containers = containers or ContainerBackend(DockerEngine())
    found = _sweep(containers, older_than, dry_run, lambda item: "container")
    if swarm:
        if services is None:
            from pipes_docker.dockerapi.services import DockerSwarmEngine
            from pipes_docker.swarm.backend import SwarmBackend

            services = SwarmBackend(DockerSwarmEngine())
        found += _sweep(
            services,
            older_than,
            dry_run,
            lambda item: "Swarm config" if item.parent is not None else "Swarm service",
        )
    swept = {orphan.name for orphan in found}
    jobs = [
        item.labels
        for item in containers.owned({MANAGED_LABEL: "true"})
        if (item.name or item.id) not in swept
    ]
    for root in temp_dir_roots:
        for path in orphaned_temp_dirs(root, jobs=jobs, older_than=older_than):
            if not dry_run:
                remove_temp_dir(path)
            found.append(Orphan("temp dir", path))
    return found


def _sweep(
    backend: Backend, older_than: timedelta, dry_run: bool, kind: Callable[[OwnedObject], str]
) -> list[Orphan]:
    found = []
    for item in orphans(backend, older_than=older_than):
        if not dry_run:
            backend.remove_owned(item)
        found.append(Orphan(kind(item), item.name or item.id))
    return found
