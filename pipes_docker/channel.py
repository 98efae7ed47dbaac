"""How context travels into the container and messages travel out.

A channel is opened once per run. It yields the context injector and message reader for dagster's
``open_pipes_session`` and the bind mounts the container needs, and it removes everything it
made when the run ends.

:class:`PipesDockerMountedChannel` uses one private temp dir on the orchestrator's host:

    pipes-docker-XXXX/      0700, the orchestrator's user: other host users cannot enter it
        io/                 0777, bind-mounted into the container at ``mount_path``
            context.json    0644, written before the container starts
            messages        0666, appended to by the container's dagster-pipes writer

The inner dir is open to every uid so a container running as a non-root user can create and
append files in it; the closed parent keeps those files out of reach of other users on the host.
The bind mount is resolved by the engine, so this channel needs an engine that shares the
orchestrator's filesystem (a local daemon or one with the same paths mounted).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import orjson
from dagster import PipesContextInjector, PipesMessageReader
from dagster_pipes import PipesContextData, PipesParams

from pipes_docker.reader import PipesDockerFileMessageReader

__all__ = [
    "Mount",
    "OpenChannel",
    "PipesDockerChannel",
    "PipesDockerFileContextInjector",
    "PipesDockerMountedChannel",
]

DEFAULT_MOUNT_PATH = "/dagster-pipes"
CONTEXT_FILE = "context.json"
MESSAGES_FILE = "messages"

_PRIVATE_DIR = stat.S_IRWXU  # 0700
_SHARED_DIR = stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO  # 0777
_READABLE_FILE = 0o644
_WRITABLE_FILE = 0o666


@dataclass(frozen=True)
class Mount:
    """A host path the container sees at ``container_path``."""

    host_path: str
    container_path: str
    read_only: bool = False


@dataclass(frozen=True)
class OpenChannel:
    """What an open channel gives one run."""

    context_injector: PipesContextInjector
    message_reader: PipesMessageReader
    mounts: Sequence[Mount]


class PipesDockerChannel(ABC):
    """Carries the Pipes context into a container and its messages out, for one run at a time.

    Implementations hold configuration only; per-run state lives in what :meth:`open` yields,
    so one channel serves any number of concurrent runs.
    """

    @abstractmethod
    @contextmanager
    def open(self, *, warn: Callable[[str], None]) -> Iterator[OpenChannel]:
        """Prepare one run's context and message transport; tear it down on exit.

        Args:
            warn: Where to report problems found in the message stream.
        """


class PipesDockerFileContextInjector(PipesContextInjector):
    """Writes the context as JSON to a file the container reads through a bind mount."""

    def __init__(self, host_path: str, container_path: str) -> None:
        self._host_path = host_path
        self._container_path = container_path

    @contextmanager
    def inject_context(self, context_data: PipesContextData) -> Iterator[PipesParams]:
        _write_file(self._host_path, orjson.dumps(context_data), _READABLE_FILE)
        yield {"path": self._container_path}

    def no_messages_debug_text(self) -> str:
        return (
            f"The context was written to {self._host_path}, which the container sees as"
            f" {self._container_path} (DAGSTER_PIPES_CONTEXT points there)."
        )


class PipesDockerMountedChannel(PipesDockerChannel):
    """Context and messages travel through files in a per-run temp dir, bind-mounted.

    Args:
        temp_dir_root: Where per-run temp dirs are made; the system default when ``None``.
            Must be a path the Docker engine can bind-mount.
        mount_path: Where the container sees the dir.
        poll_interval: How often the message reader looks for new data, in seconds.
    """

    def __init__(
        self,
        *,
        temp_dir_root: str | None = None,
        mount_path: str = DEFAULT_MOUNT_PATH,
        poll_interval: float = 0.05,
    ) -> None:
        if not os.path.isabs(mount_path):
            raise ValueError(f"mount_path must be an absolute path, got {mount_path!r}")
        self._temp_dir_root = temp_dir_root
        self._mount_path = mount_path.rstrip("/") or "/"
        self._poll_interval = poll_interval

    @contextmanager
    def open(self, *, warn: Callable[[str], None]) -> Iterator[OpenChannel]:
        root = tempfile.mkdtemp(prefix="pipes-docker-", dir=self._temp_dir_root)
        try:
            os.chmod(root, _PRIVATE_DIR)
            io_dir = os.path.join(root, "io")
            os.mkdir(io_dir)
            os.chmod(io_dir, _SHARED_DIR)  # explicit: mkdir's mode is cut by the umask
            messages = os.path.join(io_dir, MESSAGES_FILE)
            _write_file(messages, b"", _WRITABLE_FILE)
            yield OpenChannel(
                context_injector=PipesDockerFileContextInjector(
                    os.path.join(io_dir, CONTEXT_FILE), self._container_path(CONTEXT_FILE)
                ),
                message_reader=PipesDockerFileMessageReader(
                    messages,
                    self._container_path(MESSAGES_FILE),
                    warn=warn,
                    poll_interval=self._poll_interval,
                ),
                mounts=[Mount(io_dir, self._mount_path)],
            )
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _container_path(self, name: str) -> str:
        return f"{self._mount_path}/{name}"


def _write_file(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # os.open's mode is cut by the umask too
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
