"""Drive one container through its life: create, attach, start, wait, stop, remove.

The launcher owns the order of operations and the guarantees around them:

* the output stream is attached *before* the container starts, so no early output is missed;
* stdout and stderr are pumped on a background thread while the main thread waits, so a signal
  delivered to the orchestrator interrupts the wait promptly;
* whatever happens (a failed start, a timeout, an interruption), the container is stopped if it
  still runs, its remaining output is drained, and it is removed;
* a pump that dies (the transport broke, a sink raised) fails the run with its cause: output
  that was lost never passes as a success.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum

from pipes_docker.backend import OutputStream
from pipes_docker.container.engine import (
    ContainerEngine,
    ContainerExit,
    ContainerSpec,
    ContainerState,
)
from pipes_docker.demux import STDERR, STDOUT, TAIL_LINES, FrameDemuxer, output_tail
from pipes_docker.errors import (
    PipesDockerEngineError,
    PipesDockerError,
    PipesDockerOutputError,
    PipesDockerTimeoutError,
    describe_timeout,
)
from pipes_docker.interrupts import deferred_signals
from pipes_docker.messages import ByteSink

__all__ = ["ContainerLauncher", "ContainerOutcome", "Removal", "awaited_removals"]

logger = logging.getLogger(__name__)

_CHUNK_SIZE = 1 << 16
# How long after its output stream ends a container may go on looking as if it runs.
_STREAM_END_GRACE_SECONDS = 3.0


class _Phase(Enum):
    NOT_CREATED = "not created"
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"


@dataclass(frozen=True)
class ContainerOutcome:
    """What happened to a container that ran to its end.

    ``removal`` is set when the removal was left to run in the background: wait for it.
    """

    container_id: str
    container_name: str
    exit: ContainerExit
    duration_seconds: float
    removal: Removal | None = None
    usage: Mapping[str, int | float] = field(default_factory=dict)


class Removal:
    """A removal (of a container, a service) on a thread, overlapping the caller's teardown."""

    def __init__(self, remove: Callable[[], None]) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._remove, args=(remove,), name="pipes-docker-remove"
        )
        self._thread.start()

    def _remove(self, remove: Callable[[], None]) -> None:
        try:
            remove()
        except BaseException as exc:
            self._error = exc

    def wait(self) -> None:
        """Block until the container is gone; raise what removing it raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error


@contextlib.contextmanager
def awaited_removals(what: str) -> Iterator[list[Removal]]:
    """Collects the removals a run leaves in the background; they end before the block does.

    They overlap the run's own teardown (the Pipes session closing). When the block raises,
    a removal that fails too is logged: the run's own error is the one to raise.
    """
    removals: list[Removal] = []
    try:
        yield removals
    except BaseException:
        for removal in removals:
            try:
                removal.wait()
            except Exception:
                logger.warning("Removing the run's %s failed", what, exc_info=True)
        raise
    for removal in removals:
        removal.wait()


class ContainerLauncher:
    """Runs containers on a :class:`ContainerEngine`, one call to :meth:`run` per container.

    Holds configuration only, so one launcher serves concurrent runs.

    Args:
        engine: The engine to drive.
        poll_interval: Longest single wait for the container's exit, in seconds. Shorter makes
            timeouts more exact; the wait returns as soon as the container exits either way.
        termination_timeout_seconds: After SIGTERM, how long the container gets before SIGKILL.
        drain_timeout_seconds: After the container exits, how long to wait for the engine to
            close its output stream before giving up on the rest of the output.
    """

    def __init__(
        self,
        engine: ContainerEngine,
        *,
        poll_interval: float = 1.0,
        termination_timeout_seconds: float = 20.0,
        drain_timeout_seconds: float = 30.0,
    ) -> None:
        self._engine = engine
        self._poll_interval = poll_interval
        self._termination_timeout = termination_timeout_seconds
        self._drain_timeout = drain_timeout_seconds

    def run(
        self,
        spec: ContainerSpec,
        *,
        stdout: ByteSink,
        stderr: ByteSink,
        timeout_seconds: float | None = None,
        on_interrupt: Callable[[BaseException], None] | None = None,
        graceful_stop: bool = True,
        remove_in_background: bool = False,
        on_started: Callable[[str], None] | None = None,
        adopt: ContainerState | None = None,
    ) -> ContainerOutcome:
        """Run the container to its end and return how it ended.

        A non-zero exit is an outcome, not an error: the caller decides what it means. When the
        wait is interrupted (an exception from a signal handler, say) the container is stopped,
        with SIGTERM and a grace period if ``graceful_stop`` else at once with SIGKILL, its output
        is drained, it is removed, and the interruption propagates. With
        ``remove_in_background``, a container that ran to its end is removed on a thread
        (``outcome.removal``) while the caller finishes; on every other path removal is done
        before this returns or raises.

        With ``adopt``, no container is made: that existing one (running, or ended) is driven
        from where it is, its output read from its start through the logs API (falling back to
        the attach stream, from now on, when its log driver keeps nothing). ``on_started`` is
        called with the id of a container this call started.

        Raises:
            PipesDockerLaunchError: The container could not be created or started.
            PipesDockerTimeoutError: It ran longer than ``timeout_seconds`` and was stopped.
            PipesDockerEngineError: The engine could not be reached or failed.
        """
        phase = _Phase.NOT_CREATED
        container_id = ""
        pump: _Pump | None = None
        removal: Removal | None = None
        try:
            if adopt is None:
                created = self._engine.create(spec)
                container_id, phase, tty = created.id, _Phase.CREATED, created.tty
                if spec.files:
                    self._engine.copy_files(container_id, spec.image, spec.files)
                stream = self._engine.attach(container_id)
            else:
                container_id, phase, tty = adopt.id, _Phase.CREATED, adopt.tty
                stream = self._replay(container_id)
            pump = _Pump(
                stream,
                stdout,
                stderr,
                multiplexed=not tty,
                still_running=self._still_running(container_id),
            )
            if adopt is None:
                self._engine.start(container_id, spec.image)
            phase = _Phase.RUNNING
            if adopt is None and on_started is not None:
                on_started(container_id)
            sampler = self._engine.usage(container_id)
            started = time.monotonic()
            try:
                exit_ = self._wait(container_id, started, timeout_seconds, pump, spec.image)
            finally:
                usage = sampler.stop()
            if exit_ is not None:
                pump.container_exited()
            if exit_ is None:
                self._halt(container_id, pump, self._termination_timeout)
                phase = _Phase.EXITED
                tail, tail_stream = output_tail(stdout, stderr, TAIL_LINES)
                raise PipesDockerTimeoutError(
                    describe_timeout(
                        image=spec.image,
                        container_id=container_id,
                        timeout_seconds=float(timeout_seconds or 0),
                        grace_seconds=self._termination_timeout,
                        tail=tail,
                        tail_stream=tail_stream,
                    ),
                    image=spec.image,
                    container_id=container_id,
                    timeout_seconds=float(timeout_seconds or 0),
                )
            phase = _Phase.EXITED
            duration = time.monotonic() - started
            pump.finish(self._drain_timeout)
            pump.raise_failure(container_id, spec.image)
            if remove_in_background:
                removal = Removal(functools.partial(self._engine.remove, container_id))
            return ContainerOutcome(container_id, spec.name, exit_, duration, removal, usage)
        except BaseException as exc:
            if phase is _Phase.RUNNING and pump is not None:
                with deferred_signals():
                    if on_interrupt is not None and not isinstance(exc, PipesDockerError):
                        on_interrupt(exc)
                    grace = self._termination_timeout if graceful_stop else 0.0
                    self._halt(container_id, pump, grace)
                    phase = _Phase.EXITED
            raise
        finally:
            with deferred_signals():
                if pump is not None:
                    if phase is _Phase.CREATED:
                        pump.abort()  # never started: nothing more will come
                    else:
                        pump.finish(self._drain_timeout)
                if phase is not _Phase.NOT_CREATED and removal is None:
                    self._engine.remove(container_id)

    def _wait(
        self,
        container_id: str,
        started: float,
        timeout_seconds: float | None,
        pump: _Pump,
        image: str,
    ) -> ContainerExit | None:
        """The container's exit, or ``None`` once ``timeout_seconds`` have passed.

        Raises:
            PipesDockerOutputError: The output pump failed while the container ran: waiting on
                would only lose more, so the run fails now (and the container is stopped).
        """
        deadline = None if timeout_seconds is None else started + timeout_seconds
        while True:
            pump.raise_failure(container_id, image)
            step = self._poll_interval
            if deadline is not None:
                step = min(step, deadline - time.monotonic())
                if step <= 0:
                    return None
            exit_ = self._engine.wait(container_id, max(step, 0.01))
            if exit_ is not None:
                return exit_

    def _replay(self, container_id: str) -> OutputStream:
        try:
            return self._engine.output_from_start(container_id)
        except PipesDockerEngineError as exc:
            if getattr(exc, "transient", False):
                raise
            logger.info(
                "Container %s keeps no logs (%s): reading its output from now on.",
                container_id[:12],
                exc,
            )
            try:
                return self._engine.attach(container_id)
            except Exception:  # an ended container cannot be attached to: nothing more comes
                return _EmptyStream()

    def _still_running(self, container_id: str) -> Callable[[], bool]:
        """Asked by the pump when the output stream ends: is the container still running?

        The engine ends the stream when the container exits, perhaps a moment before its state
        says so; a container still running seconds later had its stream cut (an engine restart).
        """

        def check() -> bool:
            try:
                return self._engine.wait(container_id, _STREAM_END_GRACE_SECONDS) is None
            except PipesDockerError:
                return True  # the engine is gone too: the stream was certainly cut

        return check

    def _halt(self, container_id: str, pump: _Pump, grace_seconds: float) -> None:
        """Stop a running container and read the rest of its output.

        If the engine will not stop it, remove it at once: a running container's output stream
        never ends, so waiting for the rest of it would only wait out the drain timeout.
        """
        try:
            self._engine.stop(container_id, grace_seconds)
            pump.container_exited()
        except Exception:
            logger.warning(
                "Stopping container %s failed; removing it", container_id[:12], exc_info=True
            )
            try:
                self._engine.remove(container_id)
                pump.container_exited()
            except Exception:
                logger.warning("Removing container %s failed", container_id[:12], exc_info=True)
                pump.abort()
                return
        pump.finish(self._drain_timeout)


class _EmptyStream:
    def read(self, size: int) -> bytes:
        return b""

    def close(self) -> None:
        pass


class _StreamCut(Exception):
    """The output stream ended before the container did."""


class _Pump:
    """Reads the attach stream on a thread and feeds the sinks until the stream ends."""

    def __init__(
        self,
        stream: OutputStream,
        stdout: ByteSink,
        stderr: ByteSink,
        *,
        multiplexed: bool,
        still_running: Callable[[], bool],
    ) -> None:
        self._stream = stream
        self._still_running = still_running
        self._exited = threading.Event()
        self._last_read = time.monotonic()
        self._feeding = False
        self._closing = False
        self._failure: BaseException | None = None
        self._sinks: Mapping[int, ByteSink] = {STDOUT: stdout, STDERR: stderr}
        # With a TTY the engine merges both streams into one unframed stdout stream.
        self._feed = FrameDemuxer(self._sinks).feed if multiplexed else stdout.write
        self._thread = threading.Thread(target=self._run, name="pipes-docker-output", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._pump(self._feed)
            if self._ended_early():
                raise _StreamCut(
                    "the engine closed the container's output stream while the container was"
                    " still running (was the engine restarted?)"
                )
        except BaseException as exc:
            if not self._closing:
                self._failure = exc
                # Keep reading, so a container writing to a full pipe does not block forever.
                with contextlib.suppress(BaseException):
                    self._pump(lambda chunk: None)
        finally:
            for sink in self._sinks.values():
                try:
                    sink.close()
                except BaseException as exc:
                    self._failure = self._failure or exc

    def container_exited(self) -> None:
        """The container is known to have ended: the stream's end is its natural end."""
        self._exited.set()

    def _ended_early(self) -> bool:
        # Usually the main thread sees the exit at once; ask the engine only when it has not.
        if self._closing or self._exited.wait(_STREAM_END_GRACE_SECONDS):
            return False
        return self._still_running()

    def _pump(self, feed: Callable[[bytes], None]) -> None:
        while chunk := self._stream.read(_CHUNK_SIZE):
            self._feeding = True
            feed(chunk)
            self._feeding = False
            self._last_read = time.monotonic()

    def abort(self) -> None:
        """Cut the stream off now; what has not arrived is lost."""
        self._closing = True
        self._stream.close()
        self._thread.join()

    def finish(self, timeout: float) -> None:
        """Wait for the stream to end; cut it off once it has been idle for ``timeout`` seconds.

        Idle, not in all: the pump may still be busy with output and messages the container
        wrote just before it exited (handing each message to Dagster takes time), and all of
        that must arrive. Only a stream on which nothing has come for ``timeout`` is given up.
        """
        while True:
            self._thread.join(min(1.0, timeout))
            if not self._thread.is_alive():
                break
            if not self._feeding and time.monotonic() - self._last_read > timeout:
                logger.warning(
                    "The engine sent nothing more on the container's output stream for %ss"
                    " after the container ended; closing it.",
                    timeout,
                )
                break
        self.abort()

    def raise_failure(self, container_id: str, image: str) -> None:
        """Raise if reading or handling the output failed before the stream ended."""
        if self._failure is None:
            return
        exc = self._failure
        raise PipesDockerOutputError(
            f"Reading the output of container {container_id[:12]} (image {image!r}) failed:"
            f" {type(exc).__name__}: {exc}. Output and Pipes messages after that point were"
            " lost, so the run is failed rather than reported as a success."
        ) from exc
