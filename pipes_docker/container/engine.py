"""The single-host seam: the container operations pipes-docker needs, in plain values.

:class:`ContainerEngine` takes and returns the small values below, with errors already
translated into pipes-docker's own. :class:`pipes_docker.dockerapi.containers.DockerEngine`
implements it with docker-py; unit tests use an in-memory fake.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import field
from datetime import datetime
from typing import Any, Protocol

from pipes_docker.backend import (
    ContainerFile,
    JobExit,
    Mount,
    OutputStream,
    ResourceSampler,
)
from pipes_docker.values import frozen

__all__ = [
    "ContainerEngine",
    "ContainerSpec",
    "ContainerState",
    "CreatedContainer",
    "ListedContainer",
]


@frozen
class ContainerSpec:
    """Everything needed to create one container, already merged and validated.

    ``options`` are further docker-py ``containers.create`` keywords (user, mem_limit,
    network_mode, ...) that pipes-docker passes through untouched.
    """

    image: str
    name: str
    command: str | Sequence[str] | None
    env: Mapping[str, str]
    labels: Mapping[str, str]
    mounts: Sequence[Mount] = ()
    volumes: Sequence[str] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    files: Sequence[ContainerFile] = ()


@frozen
class CreatedContainer:
    id: str
    tty: bool


@frozen
class ContainerState:
    """What the engine says about an existing container."""

    id: str
    name: str
    image: str
    running: bool
    exit_code: int | None  # None while it runs
    tty: bool
    labels: Mapping[str, str] = field(default_factory=dict)


@frozen
class ListedContainer:
    """A container as listed by its labels: enough to decide whether to sweep it."""

    id: str
    labels: Mapping[str, str]
    created: datetime
    name: str = ""


class ContainerEngine(Protocol):
    """The container operations pipes-docker needs, in plain values."""

    @property
    def address(self) -> str:
        """Where the engine is, for error messages."""
        ...

    @property
    def source(self) -> str:
        """How the engine was chosen (``env DOCKER_HOST``, ``context NAME (...)``, ...)."""
        ...

    def image_id(self, image: str) -> str | None:
        """The id of ``image`` on the engine, or ``None`` when it is not there."""
        ...

    def image_digests(self, image_id: str) -> Sequence[str]:
        """The registry digests (``repo@sha256:...``) of an image seen by ``image_id``; empty
        for an image built or loaded locally."""
        ...

    def usage(self, container_id: str) -> ResourceSampler:
        """Start sampling the running container's resource use (the engine's stats stream)."""
        ...

    def image_env(self, image: str) -> Mapping[str, str]:
        """The environment the image's config sets (its Dockerfile ``ENV`` lines)."""
        ...

    def pull(self, image: str, auth: Mapping[str, str] | None) -> None: ...

    def create(self, spec: ContainerSpec) -> CreatedContainer: ...

    def copy_files(self, container_id: str, image: str, files: Sequence[ContainerFile]) -> None:
        """Copy ``files`` into a created container, before it starts."""
        ...

    def probe_bind_mount(
        self, image: str, host_path: str, file_name: str, labels: Mapping[str, str]
    ) -> bytes | None:
        """Read ``host_path/file_name`` as the engine sees it through a bind mount.

        Creates (never starts) a container from ``image``, labelled ``labels``, that
        bind-mounts ``host_path``, reads the file through it and removes the container. Returns
        ``None`` when the engine's host has no such path: the engine does not share the
        caller's filesystem there.
        """
        ...

    def attach(self, container_id: str) -> OutputStream: ...

    def start(self, container_id: str, image: str) -> None: ...

    def wait(self, container_id: str, timeout: float) -> JobExit | None:
        """The container's exit, or ``None`` if it is still running after ``timeout`` seconds."""
        ...

    def stop(self, container_id: str, grace_seconds: float) -> None: ...

    def remove(self, container_id: str) -> None: ...

    def list_containers(self, labels: Mapping[str, str]) -> Sequence[ListedContainer]:
        """Every container, running or not, that carries all of ``labels``."""
        ...

    def container_state(self, container_id: str) -> ContainerState | None:
        """The container's state, or ``None`` when there is no such container."""
        ...

    def output_from_start(self, container_id: str) -> OutputStream:
        """Everything the container wrote, from its start, then what it writes until it ends.

        Read through the logs API, so only for containers whose log driver keeps the output;
        framed like the attach stream (stdout and stderr apart) unless the container has a TTY.

        Raises:
            PipesDockerEngineError: The engine cannot replay this container's output.
        """
        ...

    def get_archive(self, container_id: str, path: str) -> OutputStream | None:
        """A tar stream of ``path`` in the container (running or ended); ``None`` when the
        container has no such path."""
        ...

    def create_lease(self, container_id: str, image: str, labels: Mapping[str, str]) -> str:
        """Create (never start) a marker container saying who now owns ``container_id``."""
        ...
