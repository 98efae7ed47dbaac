"""Values shared by both backends (a container on one engine, a Swarm service) and the channels.

Nothing here knows docker-py: these are what the channels and specs hand to whichever backend
runs the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["ContainerFile", "Mount", "OutputStream"]


@dataclass(frozen=True)
class Mount:
    """A host path the container sees at ``container_path``."""

    host_path: str
    container_path: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerFile:
    """A file copied into the container after it is created and before it starts.

    Works on every engine, shared filesystem or not. Parent directories are created as needed,
    world-readable, owned by root.
    """

    path: str
    data: bytes
    mode: int = 0o644


class OutputStream(Protocol):
    """A byte stream read in chunks; ``read`` returns ``b""`` at the end."""

    def read(self, size: int) -> bytes: ...

    def close(self) -> None: ...
