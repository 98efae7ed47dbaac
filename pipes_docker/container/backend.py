"""The single-host backend: each job is a container on one Docker engine.

The container's output is read from its attach stream, attached before it starts. A container
found again after a restart (reattach) is read from its start through the logs API, where its
log driver kept the output.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar

from pipes_docker.backend import (
    FoundJob,
    JobExit,
    JobSpec,
    OutputFollower,
    OutputStream,
    OwnedObject,
    ResourceSampler,
    RunImage,
    RunTarget,
)
from pipes_docker.channels.base import OpenChannel, PipesDockerChannel
from pipes_docker.container.engine import ContainerEngine
from pipes_docker.container.spec import CONTAINER_OPTIONS, container_spec
from pipes_docker.demux import STDERR, STDOUT, FrameDemuxer
from pipes_docker.errors import PipesDockerEngineError, PipesDockerError, PipesDockerImageError
from pipes_docker.images import PullPolicy, ensure_image, registry_auth
from pipes_docker.messages import ByteSink
from pipes_docker.ownership import LEASE_LABEL
from pipes_docker.pump import OutputPump

__all__ = ["ContainerBackend", "ContainerJob"]

logger = logging.getLogger(__name__)

# How long after its output stream ends a container may go on looking as if it runs.
_STREAM_END_GRACE_SECONDS = 3.0

_T = TypeVar("_T")


def _with_image(ensure: Callable[[], object] | None, call: Callable[[], _T]) -> _T:
    """``call()``; if the engine says the image is missing, make sure of it and call again."""
    try:
        return call()
    except PipesDockerImageError as exc:
        if not exc.missing or ensure is None:
            raise
    ensure()
    return call()


class ContainerBackend:
    """Runs each job as a container on one :class:`ContainerEngine`.

    Args:
        engine: The engine.
        pull_policy: When to pull the run's image.
        registry: Credentials for pulls (``{"url", "username", "password"}``).
    """

    kind = "container"
    options = CONTAINER_OPTIONS

    def __init__(
        self,
        engine: ContainerEngine,
        *,
        pull_policy: PullPolicy = "if_not_present",
        registry: Mapping[str, str] | None = None,
    ) -> None:
        self.engine = engine
        self._pull_policy = pull_policy
        self._registry = dict(registry) if registry else None

    @property
    def address(self) -> str:
        return self.engine.address

    @property
    def engine_source(self) -> str:
        return self.engine.source

    def prepare_image(
        self, image: str, registry: Mapping[str, str] | None = None, *, now: bool = False
    ) -> RunImage:
        auth = registry_auth(registry or self._registry)

        def ensure() -> str:  # a closure: its repr shows no credentials
            return ensure_image(self.engine, image, self._pull_policy, auth)

        if now or self._pull_policy == "always":
            return RunImage(image, id=ensure())
        return RunImage(image, ensure=ensure)

    def image_env(self, image: RunImage) -> Mapping[str, str]:
        # By the id prepare_image found, when it made sure of the image: the engine answers
        # that from the inspect it made then.
        return self.engine.image_env(image.id or image.name)

    def image_metadata(self, image: RunImage) -> Mapping[str, Any]:
        image_id = image.id or self.engine.image_id(image.name)
        if image_id is None:
            return {}  # removed since the job was made from it
        metadata: dict[str, Any] = {"pipes_docker/image_id": image_id}
        digests = self.engine.image_digests(image_id)
        if digests:
            metadata["pipes_docker/image_digest"] = digests[0]
        return metadata

    @contextmanager
    def open_channel(
        self, channel: PipesDockerChannel, *, image: RunImage, warn: Callable[[str], None]
    ) -> Iterator[OpenChannel]:
        # Only a probe the engine was not asked before (this process or another) needs the
        # image: it makes a container from it.
        with ExitStack() as stack:
            opened = _with_image(
                image.ensure,
                lambda: stack.enter_context(
                    channel.open(engine=self.engine, image=image.name, warn=warn)
                ),
            )
            yield opened

    def create(self, spec: JobSpec) -> ContainerJob:
        native = container_spec(spec)
        created = _with_image(spec.image.ensure, lambda: self.engine.create(native))
        job = ContainerJob(self.engine, created.id, spec.name, native.image, tty=created.tty)
        if native.files:
            try:
                self.engine.copy_files(created.id, native.image, native.files)
            except BaseException:
                job.remove()
                raise
        return job

    def find(self, job_id: str) -> FoundJob | None:
        state = self.engine.container_state(job_id)
        if state is None:
            return None
        job = ContainerJob(
            self.engine, state.id, state.name, state.image, tty=state.tty, adopted=True
        )
        return FoundJob(job, state.image, state.labels, state.running, state.exit_code)

    def lease(self, found: FoundJob, labels: Mapping[str, str]) -> Callable[[], None]:
        target = found.job.target
        lease_id = self.engine.create_lease(
            target.id, found.image, {**labels, LEASE_LABEL: target.id}
        )
        return lambda: self.engine.remove(lease_id)

    def owned(self, labels: Mapping[str, str]) -> Sequence[OwnedObject]:
        return [
            OwnedObject(c.id, c.labels, c.created, name=c.name)
            for c in self.engine.list_containers(labels)
        ]

    def remove_owned(self, owned: OwnedObject) -> None:
        self.engine.remove(owned.id)

    def check_copy_out(self) -> None:
        """A container's filesystem is reachable through its engine, ended or not."""


class ContainerJob:
    """One container: made by this run, or found again (``adopted``) after a restart."""

    def __init__(
        self,
        engine: ContainerEngine,
        container_id: str,
        name: str,
        image: str,
        *,
        tty: bool,
        adopted: bool = False,
    ) -> None:
        self._engine = engine
        self._id = container_id
        self._name = name
        self._image = image
        self._tty = tty
        self._adopted = adopted

    @property
    def target(self) -> RunTarget:
        return RunTarget("container", self._id, self._name)

    def follow(self, stdout: ByteSink, stderr: ByteSink) -> OutputFollower:
        stream = self._replay() if self._adopted else self._engine.attach(self._id)
        return _AttachFollower(self, stream, stdout, stderr, multiplexed=not self._tty)

    def start(self) -> None:
        if not self._adopted:
            self._engine.start(self._id, self._image)

    def wait(self, timeout: float) -> JobExit | None:
        return self._engine.wait(self._id, timeout)

    def stop(self, grace_seconds: float) -> None:
        self._engine.stop(self._id, grace_seconds)

    def remove(self) -> None:
        self._engine.remove(self._id)

    def usage(self) -> ResourceSampler:
        return self._engine.usage(self._id)

    def metadata(self) -> Mapping[str, Any]:
        return {"pipes_docker/container_id": self._id, "pipes_docker/container_name": self._name}

    def archive(self, path: str) -> OutputStream | None:
        return self._engine.get_archive(self._id, path)

    def still_running(self) -> bool:
        """Asked when the output stream ends: is the container still running?

        The engine ends the stream when the container exits, perhaps a moment before its state
        says so; a container still running seconds later had its stream cut (an engine restart).
        """
        try:
            return self._engine.wait(self._id, _STREAM_END_GRACE_SECONDS) is None
        except PipesDockerError:
            return True  # the engine is gone too: the stream was certainly cut

    def _replay(self) -> OutputStream:
        try:
            return self._engine.output_from_start(self._id)
        except PipesDockerEngineError as exc:
            if exc.transient:
                raise
            logger.info(
                "Container %s keeps no logs (%s): reading its output from now on.",
                self._id[:12],
                exc,
            )
            try:
                return self._engine.attach(self._id)
            except Exception:  # an ended container cannot be attached to: nothing more comes
                return _EmptyStream()


class _StreamCut(Exception):
    """The output stream ended before the container did."""


class _AttachFollower:
    """The container's attach stream (or its logs, replayed), pumped into the sinks."""

    def __init__(
        self,
        job: ContainerJob,
        stream: OutputStream,
        stdout: ByteSink,
        stderr: ByteSink,
        *,
        multiplexed: bool,
    ) -> None:
        self._job = job
        self._sinks = (stdout, stderr)
        self._ended = threading.Event()
        # With a TTY the engine merges both streams into one unframed stdout stream.
        feed = FrameDemuxer({STDOUT: stdout, STDERR: stderr}).feed if multiplexed else stdout.write
        self._pump = OutputPump(stream, feed, at_end=self._check_end, on_done=self._close_sinks)

    def _check_end(self) -> None:
        # Usually the main thread sees the exit at once; ask the engine only when it has not.
        if not self._ended.wait(_STREAM_END_GRACE_SECONDS) and self._job.still_running():
            raise _StreamCut(
                "the engine closed the container's output stream while the container was"
                " still running (was the engine restarted?)"
            )

    def _close_sinks(self) -> None:
        failure: BaseException | None = None
        for sink in self._sinks:
            try:
                sink.close()
            except BaseException as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def job_ended(self) -> None:
        self._ended.set()

    def finish(self, idle_timeout: float) -> None:
        self._pump.drain(idle_timeout)

    def abort(self) -> None:
        self._ended.set()
        self._pump.abort()

    def failure(self) -> BaseException | None:
        return self._pump.failure()


class _EmptyStream:
    def read(self, size: int) -> bytes:
        return b""

    def close(self) -> None:
        pass
