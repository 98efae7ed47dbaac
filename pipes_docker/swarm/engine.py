"""The Swarm seam: every call pipes-docker makes to a Swarm manager, behind one protocol.

The rest of :mod:`pipes_docker.swarm` works with the plain values defined here.
:class:`pipes_docker.dockerapi.services.DockerSwarmEngine` implements the seam with docker-py: as
for a single engine, only transient failures are retried (the one policy in
:mod:`pipes_docker.retry`) and docker-py's errors become pipes-docker's at that boundary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import field
from datetime import datetime
from typing import Any, Protocol

from pipes_docker.backend import OutputStream
from pipes_docker.values import frozen

__all__ = [
    "ServiceConfig",
    "ServiceSpec",
    "SwarmEngine",
    "SwarmObject",
    "TaskStatus",
]

# Task states (swarmkit's TaskState) after which the task will not run (again).
_ENDED_STATES = frozenset({"complete", "failed", "rejected", "shutdown", "remove", "orphaned"})
# States in which the task's container was started.
_STARTED_STATES = frozenset({"starting", "running", "complete", "failed"})


@frozen
class ServiceConfig:
    """A file the task sees at ``target``, carried by a Swarm config.

    A ``templated`` config is rendered by the node that runs the task (Go templates): pipes-docker
    uses that only to join other configs of the same service into one file.
    """

    name: str
    data: bytes
    target: str
    templated: bool = False
    mode: int = 0o444


@frozen
class ServiceSpec:
    """Everything needed to create one ``replicated-job`` service, already merged and checked.

    ``options`` are further docker-py ``services.create`` keywords (``constraints``,
    ``resources``, ``mounts``, ``networks``, ...) passed through untouched. ``command``
    replaces the image's ``CMD`` and keeps its ``ENTRYPOINT``, as ``docker run IMAGE CMD`` does.
    """

    image: str
    name: str
    command: Sequence[str] | None
    env: Mapping[str, str]
    labels: Mapping[str, str]
    configs: Sequence[ServiceConfig] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    stop_grace_seconds: float = 10.0


@frozen
class TaskStatus:
    """Where the service's one task is, as the manager last heard from its node."""

    id: str
    state: str
    message: str
    error: str | None
    node_id: str
    container_id: str
    exit_code: int | None
    timestamp: str | None = None

    @property
    def ended(self) -> bool:
        return self.state in _ENDED_STATES

    @property
    def started(self) -> bool:
        return self.state in _STARTED_STATES


@frozen
class SwarmObject:
    """A service or config as listed: its id, labels and creation time (a service's image)."""

    id: str
    name: str
    labels: Mapping[str, str]
    created: datetime | None
    image: str = ""


class SwarmEngine(Protocol):
    """What the Swarm client needs from a manager. Implementations must be thread-safe."""

    @property
    def address(self) -> str:
        """Where the manager is, without credentials."""

    @property
    def source(self) -> str:
        """How the manager was chosen (``env DOCKER_HOST``, ``context NAME (...)``, ...)."""

    def service_mode(self) -> str:
        """How a job runs here: ``"replicated-job"``, or ``"replicated"`` on older managers.

        Either way one task, never restarted; see
        ``pipes_docker.dockerapi.services._JOBS_CLEANED_UP_API``.
        """

    def create_config(self, config: ServiceConfig, labels: Mapping[str, str]) -> str:
        """Create a Swarm config; return its id."""

    def create_service(self, spec: ServiceSpec, config_ids: Sequence[str]) -> str:
        """Create the service, its configs (``spec.configs``, in order) already made."""

    def task(self, service_id: str) -> TaskStatus | None:
        """The service's newest task; ``None`` before the manager made one, or once all are gone."""

    def task_by_id(self, task_id: str) -> TaskStatus | None:
        """A task by its id; ``None`` once the manager has deleted it (its container is gone)."""

    def logs(self, service_id: str, *, follow: bool) -> OutputStream:
        """The service's output from its start, multiplexed in the attach stream's frames.

        With ``follow`` the stream stays open for more; without, it ends with what the nodes
        have kept so far.
        """

    def node_name(self, node_id: str) -> str:
        """A node's hostname (its id when it cannot be read)."""

    def remove_service(self, service_id: str) -> None:
        """Remove the service (its task is stopped); one already gone is fine."""

    def remove_config(self, config_id: str) -> None:
        """Remove a config; one already gone is fine."""

    def service(self, service_id: str) -> SwarmObject | None:
        """A service by its id; ``None`` once it is gone."""

    def image_env(self, image: str) -> Mapping[str, str]:
        """The environment the image sets, as far as the manager has the image; else empty."""

    def list_services(self, labels: Mapping[str, str]) -> Sequence[SwarmObject]: ...

    def list_configs(self, labels: Mapping[str, str]) -> Sequence[SwarmObject]: ...
