"""An in-memory :class:`~pipes_docker.container.engine.ContainerEngine` for unit tests.

Each container is played by a Python callable, its *behaviour*, run on a thread from ``start``:

    def behaviour(spec: ContainerSpec, box: FakeContainer) -> int | JobExit: ...

``box`` translates container paths to host paths through the spec's mounts, reads files copied
into the container (``copy_files``) or mounted into it, writes to stdout and
stderr (framed exactly as the Docker engine multiplexes them, and read back in random chunk sizes
so the demuxer sees headers and payloads cut anywhere), and tells the behaviour when it has been
asked to stop. A behaviour that raises ends its container with exit code 1 and its traceback on
stderr; the exception is kept in ``engine.behaviour_errors``.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import posixpath
import random
import tarfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import docker.utils

from pipes_docker.backend import ContainerFile
from pipes_docker.container.engine import (
    ContainerSpec,
    ContainerState,
    CreatedContainer,
    JobExit,
    ListedContainer,
)
from pipes_docker.errors import PipesDockerImageError, PipesDockerMountSourceError
from pipes_docker.removals import wait_for_removals

_engine_numbers = itertools.count(1)

Behaviour = Callable[[ContainerSpec, "FakeContainer"], "int | JobExit"]

STDOUT, STDERR = 1, 2


def frame(stream_id: int, payload: bytes) -> bytes:
    """One frame of Docker's multiplexed attach stream."""
    return bytes([stream_id, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def settle() -> None:
    """Let the removals runs left in the background end: tests read what the engine shows after."""
    assert wait_for_removals(timeout=60), "a background removal did not end in a minute"


def exits_with(code: int) -> Behaviour:
    """A container that does nothing and exits with ``code``."""
    return lambda spec, box: code


def never_exits(spec: ContainerSpec, box: FakeContainer) -> int:
    """A container that runs until it is stopped, then dies as ``docker stop`` kills it."""
    box.stop_requested.wait()
    return 137


class FakeSampler:
    def __init__(self, figures: Mapping[str, int | float]) -> None:
        self.figures = figures

    def stop(self) -> Mapping[str, int | float]:
        return self.figures


class FakeStream:
    """The attach stream: bytes written by the container, read back in random-sized chunks."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._buffer = bytearray()
        self._ended = False
        self._cond = threading.Condition()
        self.closed = False

    def push(self, data: bytes) -> None:
        with self._cond:
            if not self._ended:
                self._buffer += data
                self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def read(self, size: int) -> bytes:
        with self._cond:
            self._cond.wait_for(lambda: self._buffer or self._ended or self.closed)
            if self.closed or not self._buffer:
                return b""
            take = self._rng.randint(1, min(size, len(self._buffer)))
            chunk = bytes(self._buffer[:take])
            del self._buffer[:take]
            return chunk

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


@dataclass
class FakeContainer:
    """One container: what the behaviour sees, and what the tests inspect afterwards."""

    id: str
    spec: ContainerSpec
    behaviour: Behaviour
    stream: FakeStream
    stop_requested: threading.Event = field(default_factory=threading.Event)
    exited: threading.Event = field(default_factory=threading.Event)
    exit: JobExit | None = None
    removed: bool = False
    created: float = field(default_factory=time.time)
    files: dict[str, bytes] = field(default_factory=dict)
    written: bytearray = field(default_factory=bytearray)  # all output, for replays
    replays: list[FakeStream] = field(default_factory=list)
    to_local: Callable[[str], str] = lambda path: path
    thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def env(self) -> Mapping[str, str]:
        return self.spec.env

    def host_path(self, container_path: str) -> str:
        """Where a path inside the container lives on the host, through the spec's mounts."""
        binds = [(m.host_path, m.container_path) for m in self.spec.mounts]
        binds += [tuple(volume.split(":")[:2]) for volume in self.spec.volumes]  # type: ignore[misc]
        for host, target in binds:
            root = target.rstrip("/")
            if container_path == root or container_path.startswith(root + "/"):
                return self.to_local(host) + container_path[len(root) :]
        raise AssertionError(f"{container_path} is not under any mount of {self.spec.mounts}")

    def read_file(self, container_path: str) -> bytes:
        """A file in the container: copied in before start, or seen through a mount."""
        if container_path in self.files:
            return self.files[container_path]
        with open(self.host_path(container_path), "rb") as file:
            return file.read()

    @property
    def tty(self) -> bool:
        """With a TTY the engine sends one raw stream, without frames."""
        return bool(self.spec.options.get("tty"))

    def stdout(self, data: str | bytes) -> None:
        self._push(_bytes(data) if self.tty else frame(STDOUT, _bytes(data)))

    def stderr(self, data: str | bytes) -> None:
        self._push(_bytes(data) if self.tty else frame(STDERR, _bytes(data)))

    def _push(self, data: bytes) -> None:
        self.written += data
        self.stream.push(data)
        for replay in self.replays:
            replay.push(data)

    def _run(self, errors: list[BaseException]) -> None:
        try:
            result = self.behaviour(self.spec, self)
        except BaseException as exc:
            errors.append(exc)
            self.stderr("".join(traceback.format_exception(exc)))
            result = 1
        self._finish(result)

    def _finish(self, result: int | JobExit) -> None:
        outcome = result if isinstance(result, JobExit) else JobExit(result)
        if outcome.oom_killed and outcome.memory_limit is None:
            # The real engine reads the limit back from the container's HostConfig.
            outcome = replace(outcome, memory_limit=_memory_limit(self.spec))
        with self._lock:
            if self.exited.is_set():
                return  # already killed by stop() or remove()
            self.exit = outcome
            self.stream.end()
            for replay in self.replays:
                replay.end()
            self.exited.set()


class FakeEngine:
    """Implements ``ContainerEngine`` in memory and records every call in ``calls``.

    Args:
        behaviour: Plays every container this engine creates (default: exits 0 at once).
        image_present: Whether images are present until one is pulled.
        image_env: The environment every image's config sets (its Dockerfile ``ENV``).
        create_error, start_error, pull_error: Raised by that operation when set.
        seed: Seeds the random chunk sizes of the attach streams.
        shares_filesystem: Whether the engine sees this process's files (a local engine) or
            none of them (a remote one): bind mounts and the probe behave accordingly.
        host_root: With ``shares_filesystem``, ``(engine_path, local_path)``: the engine's host
            names the local dir ``local_path`` as ``engine_path`` (an orchestrator in a
            container); paths outside it do not exist for the engine.
    """

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        image_present: bool = True,
        image_env: Mapping[str, str] | None = None,
        create_error: BaseException | None = None,
        start_error: BaseException | None = None,
        pull_error: BaseException | None = None,
        seed: int = 0,
        shares_filesystem: bool = True,
        host_root: tuple[str, str] | None = None,
    ) -> None:
        self.behaviour = behaviour or exits_with(0)
        self.images_present = image_present
        self.image_config_env = dict(image_env or {})
        self.create_error = create_error
        self.start_error = start_error
        self.pull_error = pull_error
        self._calls: list[tuple[str, str]] = []
        self.containers: dict[str, FakeContainer] = {}
        self.behaviour_errors: list[BaseException] = []
        # Unique per engine: probe results are cached per engine address.
        self.address = f"fake://engine-{next(_engine_numbers)}"
        self.source = "context fake (DOCKER_CONTEXT)"
        self.shares_filesystem = shares_filesystem
        self.host_root = host_root
        self.probes = 0
        self.probe_labels: list[dict[str, str]] = []
        self.image_id_error: BaseException | None = None  # what image_id() raises, if set
        self.digests: list[str] = []  # what image_digests() reports
        self.pull_auths: list[Mapping[str, str] | None] = []  # the auth each pull was given
        self.usage_figures: dict[str, int | float] = {}  # what the stats "engine" reports
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    # -- what tests read ------------------------------------------------------------------

    @property
    def calls(self) -> list[tuple[str, str]]:
        """The calls made, in order, once background removals have ended."""
        settle()
        return self._calls

    def ops(self) -> list[str]:
        """The names of the calls made, in order."""
        return [op for op, _ in self.calls]

    @property
    def specs(self) -> list[ContainerSpec]:
        return [c.spec for c in self.containers.values()]

    @property
    def only(self) -> FakeContainer:
        """The single container this engine created."""
        assert len(self.containers) == 1, f"expected one container, got {len(self.containers)}"
        return next(iter(self.containers.values()))

    def live_containers(self) -> list[str]:
        settle()
        return [cid for cid, c in self.containers.items() if not c.removed]

    # -- ContainerEngine --------------------------------------------------------------------

    def _record(self, op: str, arg: str) -> None:
        with self._lock:
            self._calls.append((op, arg))

    def image_id(self, image: str) -> str | None:
        self._record("image_id", image)
        if self.image_id_error is not None:
            raise self.image_id_error
        return f"sha256:{'ab' * 32}" if self.images_present else None

    def image_env(self, image: str) -> Mapping[str, str]:
        self._record("image_env", image)
        return self.image_config_env

    def pull(self, image: str, auth: Mapping[str, str] | None) -> None:
        self._record("pull", image)
        self.pull_auths.append(auth)
        if self.pull_error is not None:
            raise self.pull_error
        self.images_present = True

    def create(self, spec: ContainerSpec) -> CreatedContainer:
        self._record("create", spec.image)
        if self.create_error is not None:
            raise self.create_error
        self._check_image(spec.image)
        for mount in spec.mounts:
            if self.to_local(mount.host_path) is None:
                # As a real engine refuses a mount whose source it does not have.
                raise PipesDockerMountSourceError(
                    f"the engine has no path {mount.host_path}",
                    image=spec.image,
                    host_path=mount.host_path,
                )
        cid = hashlib.sha256(f"container {len(self.containers)}".encode()).hexdigest()
        container = FakeContainer(cid, spec, self.behaviour, FakeStream(self._rng))
        container.to_local = lambda path: self.to_local(path) or path
        self.containers[cid] = container
        return CreatedContainer(id=cid, tty=container.tty)

    def _check_image(self, image: str) -> None:
        if not self.images_present:  # as a real engine refuses to make a container
            raise PipesDockerImageError(f"No such image: {image}", image=image, missing=True)

    def to_local(self, engine_path: str) -> str | None:
        """The local path the engine means by ``engine_path``; ``None`` if it has none."""
        if not self.shares_filesystem:
            return None
        if self.host_root is None:
            return engine_path
        engine_root, local_root = self.host_root
        if engine_path == engine_root or engine_path.startswith(engine_root + "/"):
            return local_root + engine_path[len(engine_root) :]
        return None

    def copy_files(self, container_id: str, image: str, files: Sequence[ContainerFile]) -> None:
        self._record("copy_files", container_id)
        for file in files:
            self.containers[container_id].files[file.path] = file.data

    def probe_bind_mount(
        self, image: str, host_path: str, file_name: str, labels: Mapping[str, str]
    ) -> bytes | None:
        self._record("probe_bind_mount", host_path)
        self.probe_labels.append(dict(labels))
        self.probes += 1
        self._check_image(image)
        local = self.to_local(host_path)
        if local is None:
            return None
        try:
            with open(f"{local}/{file_name}", "rb") as file:
                return file.read()
        except FileNotFoundError:
            return None

    def attach(self, container_id: str) -> FakeStream:
        self._record("attach", container_id)
        return self.containers[container_id].stream

    def start(self, container_id: str, image: str) -> None:
        self._record("start", container_id)
        if self.start_error is not None:
            raise self.start_error
        container = self.containers[container_id]
        container.thread = threading.Thread(
            target=container._run, args=(self.behaviour_errors,), daemon=True
        )
        container.thread.start()

    def wait(self, container_id: str, timeout: float) -> JobExit | None:
        self._record("wait", container_id)
        container = self.containers[container_id]
        return container.exit if container.exited.wait(timeout) else None

    def stop(self, container_id: str, grace_seconds: float) -> None:
        self._record("stop", container_id)
        container = self.containers[container_id]
        container.stop_requested.set()
        if not container.exited.wait(grace_seconds):
            container._finish(137)  # the engine's SIGKILL after the grace period

    def remove(self, container_id: str) -> None:
        self._record("remove", container_id)
        container = self.containers[container_id]
        container.stop_requested.set()
        container._finish(137)  # force=True kills a container that still runs
        container.removed = True

    def container_state(self, container_id: str) -> ContainerState | None:
        self._record("container_state", container_id)
        container = self.containers.get(container_id)
        if container is None or container.removed:
            return None
        running = container.thread is not None and not container.exited.is_set()
        return ContainerState(
            id=container_id,
            name=container.spec.name,
            image=container.spec.image,
            running=running,
            exit_code=None if running or container.exit is None else container.exit.exit_code,
            tty=container.tty,
            labels=dict(container.spec.labels),
        )

    def output_from_start(self, container_id: str) -> FakeStream:
        """Everything written so far, then the rest: the fake keeps a copy of all output."""
        self._record("output_from_start", container_id)
        container = self.containers[container_id]
        replay = FakeStream(self._rng)
        replay.push(bytes(container.written))
        container.replays.append(replay)
        if container.exited.is_set():
            replay.end()
        return replay

    def get_archive(self, container_id: str, path: str) -> io.BytesIO | None:
        """A tar of the container's ``files`` at ``path`` (a file, or a directory's files)."""
        self._record("get_archive", container_id)
        files = self.containers[container_id].files
        root = path.rstrip("/")
        parent = posixpath.dirname(root)
        found = {
            name: data
            for name, data in files.items()
            if name == root or name.startswith(root + "/")
        }
        if not found:
            return None
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for name, data in sorted(found.items()):
                info = tarfile.TarInfo(posixpath.relpath(name, parent))
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return io.BytesIO(buffer.getvalue())

    def create_lease(self, container_id: str, image: str, labels: Mapping[str, str]) -> str:
        self._record("create_lease", container_id)
        spec = ContainerSpec(
            image=image, name=f"lease-{container_id[:8]}", command=None, env={}, labels=labels
        )
        lease_id = hashlib.sha256(f"lease {len(self.containers)}".encode()).hexdigest()
        lease = FakeContainer(lease_id, spec, exits_with(0), FakeStream(self._rng))
        self.containers[lease_id] = lease
        return lease_id

    def image_digests(self, image_id: str) -> Sequence[str]:
        return list(self.digests)

    def usage(self, container_id: str) -> FakeSampler:
        self._record("usage", container_id)
        return FakeSampler(dict(self.usage_figures))

    def list_containers(self, labels: Mapping[str, str]) -> Sequence[ListedContainer]:
        self._record("list_containers", ",".join(labels))
        return [
            ListedContainer(cid, dict(c.spec.labels), datetime.fromtimestamp(int(c.created), UTC))
            for cid, c in self.containers.items()
            if not c.removed and labels.items() <= c.spec.labels.items()
        ]


def _bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


def _memory_limit(spec: ContainerSpec) -> int | None:
    limit = spec.options.get("mem_limit")
    return None if limit is None else int(docker.utils.parse_bytes(limit))
