"""Drive one Swarm job through its life: configs, service, task, logs, removal.

The guarantees are the single-host launcher's, on a scheduler:

* the service's logs are followed from its creation, so output and messages arrive while the
  task runs; once the task has ended they are read once more from the start, without follow,
  and only what the live stream had not yet delivered is passed on. The manager's follow stream
  never ends by itself and may lag behind; the second read ends with everything the node kept,
  so nothing the task wrote is lost and nothing arrives twice (each stream is counted in bytes,
  which holds however the two reads cut the output into frames);
* a task that is not running within ``schedule_timeout_seconds`` (no node matches its
  constraints, its image cannot be pulled) fails the run with the scheduler's own words;
* whatever happens, the service is removed (its task's container with it, which the launcher
  waits for, bounded) and then the configs made for it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pipes_docker.backend import OutputStream
from pipes_docker.demux import STDERR, STDOUT, TAIL_LINES, FrameDemuxer, output_tail
from pipes_docker.errors import (
    PipesDockerError,
    PipesDockerImageError,
    PipesDockerLaunchError,
    PipesDockerOutputError,
    PipesDockerTimeoutError,
    describe_timeout,
)
from pipes_docker.interrupts import deferred_signals
from pipes_docker.launcher import Removal
from pipes_docker.messages import ByteSink
from pipes_docker.spec import MANAGED_LABEL
from pipes_docker.swarm.engine import ServiceSpec, SwarmEngine, TaskStatus
from pipes_docker.swarm.spec import SERVICE_LABEL

__all__ = ["ServiceLauncher", "ServiceOutcome"]

logger = logging.getLogger(__name__)

_CHUNK_SIZE = 1 << 16
_FIRST_POLL_SECONDS = 0.05
_MAX_POLL_SECONDS = 0.2
# How long stopping the follower waits for its thread; it feeds nothing more either way.
_STOP_SECONDS = 5.0
# After a service is removed, how long its task's container may take to go, beyond its grace.
_REMOVAL_SECONDS = 30.0


@dataclass(frozen=True)
class ServiceOutcome:
    """How a service's task ended. ``removal`` runs in the background: wait for it."""

    service_id: str
    service_name: str
    task: TaskStatus
    node: str
    duration_seconds: float
    removal: Removal | None = None


class ServiceLauncher:
    """Runs Swarm jobs on a :class:`SwarmEngine`, one call to :meth:`run` per job.

    Holds configuration only, so one launcher serves concurrent runs.

    Args:
        engine: The manager to drive.
        schedule_timeout_seconds: How long the task may take to start running (scheduling, and
            the image pull on its node) before the run fails.
    """

    def __init__(self, engine: SwarmEngine, *, schedule_timeout_seconds: float = 60.0) -> None:
        self._engine = engine
        self._schedule_timeout = schedule_timeout_seconds

    def run(
        self,
        spec: ServiceSpec,
        *,
        stdout: ByteSink,
        stderr: ByteSink,
        timeout_seconds: float | None = None,
        on_interrupt: Callable[[BaseException], None] | None = None,
        remove_in_background: bool = False,
    ) -> ServiceOutcome:
        """Run the job to its end and return how its task ended.

        A non-zero exit is an outcome, not an error. ``stdout`` and ``stderr`` are closed when
        this returns or raises. With ``remove_in_background`` the service of a job that ran to
        its end is removed on a thread (``outcome.removal``); otherwise before this returns.

        Raises:
            PipesDockerLaunchError: The service could not be made, or its task not scheduled,
                started, or was rejected by its node.
            PipesDockerImageError: The node could not find or pull the image.
            PipesDockerTimeoutError: It ran longer than ``timeout_seconds``; it was removed.
            PipesDockerEngineError: The manager could not be reached or failed.
        """
        counted = {STDOUT: _CountingSink(stdout), STDERR: _CountingSink(stderr)}
        job = _Job(stop_grace_seconds=spec.stop_grace_seconds)
        follower: _Follower | None = None
        removal: Removal | None = None
        failed = False
        try:
            labels = {MANAGED_LABEL: "true", **spec.labels, SERVICE_LABEL: spec.name}
            for config in spec.configs:
                job.config_ids.append(self._engine.create_config(config, labels))
            job.service_id = self._engine.create_service(spec, job.config_ids)
            follower = _Follower(self._engine.logs(job.service_id, follow=True), counted)
            task, started = self._wait(spec, job, timeout_seconds, follower)
            job.task_ended = True
            duration = time.monotonic() - started
            follower.stop()
            follower.raise_failure(spec)
            self._read_rest(job.service_id, counted)
            for sink in counted.values():
                sink.close()
            node = self._engine.node_name(task.node_id) if task.node_id else ""
            if remove_in_background:
                removal = Removal(functools.partial(self._remove, job))
            return ServiceOutcome(job.service_id, spec.name, task, node, duration, removal)
        except BaseException as exc:
            failed = True
            with deferred_signals():
                try:
                    if job.service_id:
                        if on_interrupt is not None and not isinstance(exc, PipesDockerError):
                            on_interrupt(exc)
                        # Removing the service is how a task is stopped: SIGTERM, then SIGKILL
                        # after the stop grace period; the output until then is still read.
                        self._remove_service(job)
                except Exception:
                    logger.warning("Stopping the run's service failed", exc_info=True)
                finally:
                    if follower is not None:
                        follower.stop()
                    for sink in counted.values():
                        with contextlib.suppress(Exception):
                            sink.close()
            raise
        finally:
            if removal is None:
                with deferred_signals():
                    try:
                        self._remove(job)
                    except Exception:
                        if not failed:
                            raise
                        # The run's own error is the one to raise.
                        logger.warning("Removing the run's service failed", exc_info=True)

    def _wait(
        self,
        spec: ServiceSpec,
        job: _Job,
        timeout_seconds: float | None,
        follower: _Follower,
    ) -> tuple[TaskStatus, float]:
        """The ended task and when it was seen started (for the duration and the timeout)."""
        created = time.monotonic()
        started: float | None = None
        poll = _FIRST_POLL_SECONDS
        last: TaskStatus | None = None
        while True:
            follower.raise_failure(spec)
            task = self._engine.task(job.service_id)
            now = time.monotonic()
            if task is None and last is not None:
                raise PipesDockerLaunchError(
                    f"Swarm service {spec.name!r} (image {spec.image!r}) was removed by someone"
                    f" else while its task was {last.state} (`docker service rm`, or another"
                    " orchestrator's orphan sweep): the job's end is unknown.",
                    image=spec.image,
                    container_id=last.container_id or None,
                )
            if task is not None:
                last, job.task_id = task, task.id
                if started is None and task.started:
                    # First seen already ended: it ran within the last poll, or since creation.
                    started = created if task.ended else now
                if task.ended:
                    if task.state == "complete" or (task.state == "failed" and task.exit_code):
                        return task, started if started is not None else created
                    # Rejected by its node, failed before the job's process ran, shut down or
                    # orphaned (its node was lost): the job has no exit code to report.
                    raise self._not_started(spec, task)
            if started is None and now - created > self._schedule_timeout:
                raise self._not_started(spec, last, waited=now - created)
            if (
                started is not None
                and timeout_seconds is not None
                and now - started >= timeout_seconds
            ):
                self._time_out(spec, job, follower, timeout_seconds)
            time.sleep(poll)
            poll = min(poll * 2, _MAX_POLL_SECONDS)

    def _time_out(
        self, spec: ServiceSpec, job: _Job, follower: _Follower, timeout_seconds: float
    ) -> None:
        self._remove_service(job)
        follower.stop()
        tail, tail_stream = output_tail(follower.stdout, follower.stderr, TAIL_LINES)
        raise PipesDockerTimeoutError(
            describe_timeout(
                image=spec.image,
                container_id=f"of service {spec.name}",
                timeout_seconds=timeout_seconds,
                grace_seconds=spec.stop_grace_seconds,
                tail=tail,
                tail_stream=tail_stream,
            ),
            image=spec.image,
            container_id=job.service_id,
            timeout_seconds=timeout_seconds,
        )

    def _not_started(
        self, spec: ServiceSpec, task: TaskStatus | None, waited: float | None = None
    ) -> PipesDockerError:
        node = self._engine.node_name(task.node_id) if task and task.node_id else None
        where = f" on node {node!r}" if node else ""
        said = (task.error or task.message) if task else "no task was created"
        if waited is not None:
            lead = (
                f"The task of Swarm service {spec.name!r} (image {spec.image!r}) did not start"
                f" within {waited:.0f} s{where}; it is {task.state if task else 'not made'}:"
                f" {said}."
            )
            hint = (
                " Check the placement constraints and resources in service_kwargs against the"
                " nodes (`docker node ls`), or raise schedule_timeout_seconds if pulling the"
                " image takes longer."
            )
        else:
            state = task.state if task else "unknown"
            lead = (
                f"The task of Swarm service {spec.name!r} (image {spec.image!r}) did not run to"
                f" its end{where}: {said} (task state {state})."
            )
            hint = ""
        if task is not None and "no such image" in said.lower():
            return PipesDockerImageError(
                f"{lead} Every node that may run the job needs the image: push it to a"
                " registry the nodes can pull from, or load it on each of them.",
                image=spec.image,
            )
        return PipesDockerLaunchError(lead + hint, image=spec.image, container_id=None)

    def _read_rest(self, service_id: str, counted: Mapping[int, _CountingSink]) -> None:
        """Read the ended task's output from the start; pass on what the live stream missed."""
        resumed = {stream: _Resumed(sink) for stream, sink in counted.items()}
        demuxer = FrameDemuxer(resumed)
        stream = self._engine.logs(service_id, follow=False)
        try:
            while chunk := stream.read(_CHUNK_SIZE):
                demuxer.feed(chunk)
        finally:
            stream.close()
        names = {STDOUT: "stdout", STDERR: "stderr"}
        short = [names[stream] for stream, resumed_sink in resumed.items() if resumed_sink.missing]
        if short:
            raise PipesDockerOutputError(
                f"The node kept less of the task's {' and '.join(short)} than had already"
                " arrived: its log driver rotated or dropped output (a max-size / max-file"
                " setting?), so the rest of the output and messages cannot be told apart from"
                " what arrived. Give the task's log driver room for the whole job's output."
            )

    def _remove(self, job: _Job) -> None:
        """Remove the service (its task and container with it), then every config.

        Raises:
            PipesDockerError: The first removal that failed, once all were tried.
        """
        errors: list[Exception] = []
        try:
            self._remove_service(job)
        except Exception as exc:
            errors.append(exc)
        for config_id in list(job.config_ids):
            try:
                self._engine.remove_config(config_id)
                job.config_ids.remove(config_id)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def _remove_service(self, job: _Job) -> None:
        """Remove the service; wait (bounded) until a task it stops is gone."""
        if not job.service_id or job.service_removed:
            return
        if not job.task_id:  # interrupted before the first look at the task
            task = self._engine.task(job.service_id)
            job.task_id = task.id if task is not None else ""
        self._engine.remove_service(job.service_id)
        job.service_removed = True
        if not job.task_id or job.task_ended:
            # A task that ended has nothing left to stop: the manager deletes it, and its node
            # its container, on their own (within seconds; the tests wait for both).
            return
        patience = job.stop_grace_seconds + _REMOVAL_SECONDS
        deadline = time.monotonic() + patience
        while self._engine.task_by_id(job.task_id) is not None:
            if time.monotonic() > deadline:
                logger.warning(
                    "Task %s of removed service %s was still there after %.0fs; leaving it to"
                    " the Swarm.",
                    job.task_id[:12],
                    job.service_id[:12],
                    patience,
                )
                return
            time.sleep(0.1)


@dataclass
class _Job:
    """What one run made on the Swarm so far: what must be removed."""

    service_id: str = ""
    task_id: str = ""
    config_ids: list[str] = field(default_factory=list)
    service_removed: bool = False
    task_ended: bool = False
    stop_grace_seconds: float = 0.0


class _CountingSink:
    """Passes bytes on to its sink and counts them: how far this stream has been delivered."""

    def __init__(self, sink: ByteSink) -> None:
        self.sink = sink
        self.delivered = 0
        self._closed = False

    def write(self, data: bytes | memoryview) -> None:
        self.sink.write(data)
        self.delivered += len(data)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.sink.close()

    def tail_lines(self, count: int) -> list[str]:
        return self.sink.tail_lines(count)


class _Resumed:
    """For a read from the start: drops what was delivered already, passes on the rest."""

    def __init__(self, sink: _CountingSink) -> None:
        self._sink = sink
        self._skip = sink.delivered

    @property
    def missing(self) -> bool:
        """Whether the read from the start ended before what had been delivered already."""
        return self._skip > 0

    def write(self, data: bytes | memoryview) -> None:
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return
            data, self._skip = data[self._skip :], 0
        self._sink.write(data)


class _Follower:
    """Follows the service's logs on a thread while the task runs."""

    def __init__(self, stream: OutputStream, counted: Mapping[int, _CountingSink]) -> None:
        self._stream = stream
        self._demuxer = FrameDemuxer(counted)
        self.stdout, self.stderr = counted[STDOUT], counted[STDERR]
        self._stopping = False
        self._feeding = threading.Lock()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pipes-docker-swarm-logs")
        self._thread.daemon = True
        self._thread.start()

    def _run(self) -> None:
        try:
            while chunk := self._stream.read(_CHUNK_SIZE):
                with self._feeding:
                    if self._stopping:
                        return
                    self._demuxer.feed(chunk)
        except BaseException as exc:
            if not self._stopping and not _is_transport_failure(exc):
                self._failure = exc
            # A broken follow stream loses nothing: the read after the task's end is complete.

    def stop(self) -> None:
        """Stop following; what did not arrive yet is read from the start later.

        Once this returns nothing more is fed, even if the read blocked on the connection
        wakes up only later (a transport whose socket cannot be shut down from here).
        """
        with self._feeding:
            self._stopping = True
        self._stream.close()
        self._thread.join(_STOP_SECONDS)

    def raise_failure(self, spec: ServiceSpec) -> None:
        if self._failure is None:
            return
        exc = self._failure
        raise PipesDockerOutputError(
            f"Handling the output of Swarm service {spec.name!r} (image {spec.image!r}) failed:"
            f" {type(exc).__name__}: {exc}. The run is failed rather than reported as a success."
        ) from exc


def _is_transport_failure(exc: BaseException) -> bool:
    return isinstance(exc, OSError | ConnectionError) or "urllib3" in type(exc).__module__
