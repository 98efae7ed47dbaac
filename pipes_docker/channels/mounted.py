"""The mounted channel: context and messages in files of a per-run temp dir, bind-mounted.

One private temp dir per run on the orchestrator's side:

    pipes-docker-XXXX/      0700, the orchestrator's user: other host users cannot enter it
        io/                 0777, bind-mounted into the container at ``mount_path``
            context.json    0644, written before the container starts
            messages        0666, appended to by the container's dagster-pipes writer

The inner dir is open to every uid so a container running as a non-root user can create and
append files in it; the closed parent keeps those files out of reach of other users on the host.

The bind mount is resolved by the engine, so the engine must see the orchestrator's temp dir:
a local daemon does; a remote one (``DOCKER_HOST=tcp://``/``ssh://``) does not. When the
orchestrator itself runs in a container that shares the host's engine, its temp root is a mount
of some host dir: ``host_temp_dir_root`` names that host dir. A probe (cached per engine) checks
this before the first run, so a missing or wrong mapping fails with a clear error instead of a
missing file inside the job.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from functools import partial

import orjson
from dagster import PipesContextInjector
from dagster_pipes import PipesContextData, PipesParams

from pipes_docker.backend import Mount
from pipes_docker.channels.base import OpenChannel, PipesDockerChannel, ReattachedContextInjector
from pipes_docker.channels.probe import ProbeResult, forget_probe, probe_shared_dir
from pipes_docker.container.engine import ContainerEngine
from pipes_docker.errors import (
    PipesDockerChannelError,
    PipesDockerConfigError,
    PipesDockerMountSourceError,
)
from pipes_docker.reader import PipesDockerFileMessageReader
from pipes_docker.removals import remove_in_background
from pipes_docker.tempdirs import TEMP_DIR_PREFIX, mark_owner

__all__ = ["PipesDockerFileContextInjector", "PipesDockerMountedChannel"]

DEFAULT_MOUNT_PATH = "/dagster-pipes"
CONTEXT_FILE = "context.json"
MESSAGES_FILE = "messages"

_PRIVATE_DIR = stat.S_IRWXU  # 0700
_SHARED_DIR = stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO  # 0777
_READABLE_FILE = 0o644
_WRITABLE_FILE = 0o666


class PipesDockerFileContextInjector(PipesContextInjector):
    """Writes the context as JSON to a file the container reads through a bind mount."""

    def __init__(self, host_path: str, container_path: str) -> None:
        self._host_path = host_path
        self._container_path = container_path

    @contextmanager
    def inject_context(self, context_data: PipesContextData) -> Iterator[PipesParams]:
        data = orjson.dumps(context_data)
        try:
            write_file(self._host_path, data, _READABLE_FILE)
        except OSError as exc:
            raise PipesDockerChannelError(
                f"Writing the Pipes context ({len(data)} bytes) to {self._host_path} failed:"
                f" {exc.strerror or exc}. Free space on that filesystem, or point"
                " temp_dir_root at another one."
            ) from exc
        yield {"path": self._container_path}

    def no_messages_debug_text(self) -> str:
        return (
            f"The context was written to {self._host_path}, which the container sees as"
            f" {self._container_path} (DAGSTER_PIPES_CONTEXT points there)."
        )


class PipesDockerMountedChannel(PipesDockerChannel):
    """Context and messages travel through files in a per-run temp dir, bind-mounted.

    The fastest channel, for engines that see the orchestrator's files. Before its first run on
    an engine it probes that the engine does (once per engine, cached).

    Args:
        temp_dir_root: Where per-run temp dirs are made; the system default when ``None``.
        host_temp_dir_root: The path on the engine's host that backs ``temp_dir_root``, when
            they differ: the orchestrator runs in a container that mounts that host dir at
            ``temp_dir_root`` (``-v /srv/pipes:/pipes-tmp``). Requires ``temp_dir_root``.
        mount_path: Where the container sees the dir.
        poll_interval: How often the message reader looks for new data, in seconds. Short
            enough that the messages a job writes last are handled while its container exits
            (about 30 ms on a local engine), not after: an idle look is one read of an
            unchanged file.
    """

    transport = "mounted"

    def __init__(
        self,
        *,
        temp_dir_root: str | None = None,
        host_temp_dir_root: str | None = None,
        mount_path: str = DEFAULT_MOUNT_PATH,
        poll_interval: float = 0.01,
    ) -> None:
        if not os.path.isabs(mount_path):
            raise PipesDockerConfigError(f"mount_path must be an absolute path, got {mount_path!r}")
        if host_temp_dir_root is not None:
            if temp_dir_root is None:
                raise PipesDockerConfigError(
                    "host_temp_dir_root needs temp_dir_root: the dir it backs"
                )
            if not os.path.isabs(host_temp_dir_root):
                raise PipesDockerConfigError(
                    f"host_temp_dir_root must be an absolute path, got {host_temp_dir_root!r}"
                )
        self._temp_dir_root = temp_dir_root
        self._host_temp_dir_root = host_temp_dir_root
        self._mount_path = mount_path.rstrip("/") or "/"
        self._poll_interval = poll_interval

    def probe(self, engine: ContainerEngine, image: str) -> ProbeResult:
        """Whether ``engine`` sees this channel's temp dirs (cached per engine)."""
        return probe_shared_dir(engine, image, *self._roots())

    @contextmanager
    def open(
        self, *, engine: ContainerEngine, image: str, warn: Callable[[str], None]
    ) -> Iterator[OpenChannel]:
        probe = self.probe(engine, image)
        if not probe.shared:
            raise PipesDockerChannelError(self.describe_unshared(probe))
        with self.open_checked(engine=engine, warn=warn, reason=probe.reason) as opened:
            yield opened

    @contextmanager
    def open_checked(
        self, *, engine: ContainerEngine, warn: Callable[[str], None], reason: str
    ) -> Iterator[OpenChannel]:
        """Open on an engine the probe found sharing the temp dir; drop that answer if wrong.

        The answer may be remembered from another process (the engine behind the address has
        changed since). Then the engine refuses to create the container, since it has no such
        dir to mount: nothing has run, the answer is forgotten, and the next run probes again.
        """
        try:
            with self.open_unchecked(warn=warn, reason=reason) as opened:
                yield opened
        except PipesDockerMountSourceError as exc:
            forget_probe(engine.address, *self._roots())
            raise PipesDockerChannelError(
                f"The Docker engine at {engine.address} no longer sees this process's temp dir"
                f" ({exc.host_path} is missing there), though it did when last probed"
                f" ({reason}). Nothing ran. The remembered answer is dropped: run again and the"
                " engine is probed afresh."
            ) from exc

    def _roots(self) -> tuple[str, str]:
        """The temp root as this process sees it, and as the engine should."""
        local_root = os.path.realpath(self._temp_dir_root or tempfile.gettempdir())
        return local_root, self._host_temp_dir_root or local_root

    @contextmanager
    def open_unchecked(self, *, warn: Callable[[str], None], reason: str) -> Iterator[OpenChannel]:
        """Open without probing: the caller has checked that the engine sees the temp dir."""
        try:
            root = tempfile.mkdtemp(prefix=TEMP_DIR_PREFIX, dir=self._temp_dir_root)
        except OSError as exc:
            raise PipesDockerChannelError(
                f"Making a temp dir under {self._temp_dir_root or tempfile.gettempdir()} failed:"
                f" {exc.strerror or exc}."
            ) from exc
        try:
            os.chmod(root, _PRIVATE_DIR)
            # For the orphan sweep, should this process die mid-run. Best effort: without it
            # the sweep goes by the dir's age, and a full disk fails the context write anyway.
            with contextlib.suppress(OSError):
                mark_owner(root)
            io_dir = os.path.join(root, "io")
            os.mkdir(io_dir)
            os.chmod(io_dir, _SHARED_DIR)  # explicit: mkdir's mode is cut by the umask
            messages = os.path.join(io_dir, MESSAGES_FILE)
            write_file(messages, b"", _WRITABLE_FILE)
            yield OpenChannel(
                transport=self.transport,
                description=f"a bind-mounted temp dir ({io_dir}): {reason}",
                context_injector=PipesDockerFileContextInjector(
                    os.path.join(io_dir, CONTEXT_FILE), self._container_path(CONTEXT_FILE)
                ),
                message_reader=PipesDockerFileMessageReader(
                    messages,
                    self._container_path(MESSAGES_FILE),
                    warn=warn,
                    poll_interval=self._poll_interval,
                ),
                mounts=[Mount(self._engine_path(io_dir), self._mount_path)],
                launch_record={"transport": self.transport, "io_dir": io_dir},
            )
        except BaseException:
            # A failed or interrupted run cleans up before it returns: its process may end
            # by a signal next, which waits for no thread.
            shutil.rmtree(root, ignore_errors=True)
            raise
        # A run that ended well: off its path, as its job's removal (the process waits for it
        # before it exits).
        remove_in_background(partial(shutil.rmtree, root, ignore_errors=True), root)

    def reopen(
        self, record: Mapping[str, str], *, warn: Callable[[str], None]
    ) -> AbstractContextManager[OpenChannel] | None:
        io_dir = record.get("io_dir", "")
        root = os.path.dirname(io_dir)
        ours = os.path.basename(io_dir) == "io" and os.path.basename(root).startswith(
            "pipes-docker-"
        )
        if record.get("transport") != self.transport or not ours or not os.path.isdir(io_dir):
            return None  # another machine's, or cleaned up: the messages cannot be re-read
        return self._reopened(io_dir, warn)

    @contextmanager
    def _reopened(self, io_dir: str, warn: Callable[[str], None]) -> Iterator[OpenChannel]:
        try:
            with contextlib.suppress(OSError):
                mark_owner(os.path.dirname(io_dir))  # ours now: the sweep must leave it
            yield OpenChannel(
                transport=self.transport,
                description=f"reattached: messages re-read from {io_dir} from the start",
                context_injector=ReattachedContextInjector(),
                message_reader=PipesDockerFileMessageReader(
                    os.path.join(io_dir, MESSAGES_FILE),
                    self._container_path(MESSAGES_FILE),
                    warn=warn,
                    poll_interval=self._poll_interval,
                ),
            )
        finally:
            shutil.rmtree(os.path.dirname(io_dir), ignore_errors=True)

    def _engine_path(self, local_path: str) -> str:
        if self._host_temp_dir_root is None or self._temp_dir_root is None:
            return local_path
        relative = os.path.relpath(local_path, self._temp_dir_root)
        return os.path.join(self._host_temp_dir_root, relative)

    def _container_path(self, name: str) -> str:
        return f"{self._mount_path}/{name}"

    def describe_unshared(self, probe: ProbeResult) -> str:
        """Why this channel cannot work on an engine the probe found not sharing its files."""
        if self._host_temp_dir_root is not None:
            return (
                f"The mounted Pipes channel cannot work: host_temp_dir_root="
                f"{self._host_temp_dir_root!r} does not back temp_dir_root="
                f"{self._temp_dir_root!r} on the engine ({probe.reason}). Set host_temp_dir_root"
                " to the host path that is mounted at temp_dir_root in the orchestrator's"
                " container, or use the default channel, which streams context and messages"
                " when the engine does not share the orchestrator's files."
            )
        return (
            f"The mounted Pipes channel cannot work: the Docker engine does not see this"
            f" process's temp dir ({probe.reason}). The engine runs on another machine or in"
            " another filesystem (a remote DOCKER_HOST, or this process runs in a container)."
            " Use the default channel, which streams context and messages in that case, or,"
            " when this process runs in a container, set temp_dir_root to a dir mounted from"
            " the engine's host and host_temp_dir_root to that host path."
        )


def write_file(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # os.open's mode is cut by the umask too
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
