"""Drive one job through its life on any backend: create, follow, start, wait, stop, remove.

The launcher owns the order of operations and the guarantees around them, for containers and
Swarm services alike:

* the output is followed *before* the job starts, so no early output is missed;
* the output is carried on a background thread while the main thread waits, so a signal
  delivered to the orchestrator interrupts the wait promptly;
* whatever happens (a failed start, a timeout, an interruption), the job is stopped if it still
  runs, its remaining output is read, and it is removed;
* output that could not be carried (the transport broke, a sink raised) fails the run with its
  cause: output that was lost never passes as a success.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import field
from enum import Enum

from pipes_docker.backend import Backend, Job, JobExit, JobSpec, OutputFollower, RunTarget
from pipes_docker.demux import TAIL_LINES, output_tail
from pipes_docker.errors import (
    PipesDockerError,
    PipesDockerOutputError,
    PipesDockerTimeoutError,
)
from pipes_docker.interrupts import deferred_signals
from pipes_docker.messages import ByteSink
from pipes_docker.removals import Removal
from pipes_docker.values import frozen

__all__ = ["JobLauncher", "JobOutcome"]

logger = logging.getLogger(__name__)


class _Phase(Enum):
    NOT_CREATED = "not created"
    # Made, being followed and started: a Swarm task may run before its manager says so.
    STARTING = "starting"
    RUNNING = "running"
    ENDED = "ended"


@frozen
class JobOutcome:
    """What happened to a job that ran to its end.

    ``removal`` is set when the removal was left to run in the background: wait for it.
    """

    target: RunTarget
    exit: JobExit
    duration_seconds: float
    removal: Removal | None = None
    usage: Mapping[str, int | float] = field(default_factory=dict)
    metadata: Mapping[str, object] = field(default_factory=dict)


class JobLauncher:
    """Runs jobs on a :class:`Backend`, one call to :meth:`run` per job.

    Holds configuration only, so one launcher serves concurrent runs.

    Args:
        backend: What runs the jobs.
        poll_interval: Longest single wait for the job's exit, in seconds. Shorter makes
            timeouts more exact; the wait returns as soon as the job ends either way.
        termination_timeout_seconds: After SIGTERM, how long the job gets before SIGKILL.
        drain_timeout_seconds: After the job ends, how long the output may stay idle before the
            rest of it is given up.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        poll_interval: float = 1.0,
        termination_timeout_seconds: float = 20.0,
        drain_timeout_seconds: float = 30.0,
    ) -> None:
        self._backend = backend
        self._poll_interval = poll_interval
        self._termination_timeout = termination_timeout_seconds
        self._drain_timeout = drain_timeout_seconds

    def run(
        self,
        spec: JobSpec,
        *,
        stdout: ByteSink,
        stderr: ByteSink,
        timeout_seconds: float | None = None,
        on_interrupt: Callable[[BaseException], None] | None = None,
        graceful_stop: bool = True,
        remove_in_background: bool = False,
        on_created: Callable[[str], None] | None = None,
        on_started: Callable[[str], None] | None = None,
        adopt: Job | None = None,
        after_exit: Callable[[Job, JobExit], Mapping[str, object]] | None = None,
    ) -> JobOutcome:
        """Run the job to its end and return how it ended.

        A non-zero exit is an outcome, not an error: the caller decides what it means. When the
        wait is interrupted (an exception from a signal handler, say) the job is stopped, with
        SIGTERM and a grace period if ``graceful_stop`` else at once, its output is read, it is
        removed, and the interruption propagates. With ``remove_in_background``, a job that
        ran to its end is removed on a thread (``outcome.removal``) while the caller finishes;
        on every other path removal is done before this returns or raises.

        With ``adopt``, no job is made: that existing one (running, or ended), found again
        after a restart, is driven from where it is, its output read again from its start.
        ``on_created`` is called with the id of a job this call made once it exists (a
        Swarm task may run, and a restart need to find it, before its manager says it started):
        on a thread of its own, while the engine starts the job, and done before ``on_started``
        is called and before this returns or raises; ``on_started`` once it runs.
        ``after_exit`` runs once a job has ended on its own and its output is read, before it
        is removed (files are copied out of it there); what it returns joins the outcome's
        metadata.

        Raises:
            PipesDockerLaunchError: The job could not be made or started.
            PipesDockerTimeoutError: It ran longer than ``timeout_seconds`` and was stopped.
            PipesDockerOutputError: Its output could not be carried.
            PipesDockerEngineError: The engine could not be reached or failed.
        """
        phase = _Phase.NOT_CREATED
        job: Job | None = adopt
        follower: OutputFollower | None = None
        removal: Removal | None = None
        created: _WhileStarting | None = None
        try:
            if job is None:
                job = self._backend.create(spec)
            # From here the job may be running: a Swarm service's task starts on its own.
            phase = _Phase.STARTING
            if adopt is None and on_created is not None:
                created = _WhileStarting(on_created, job.target.id)
            follower = job.follow(stdout, stderr)
            if created is not None:
                created.go()
            job.start()
            if created is not None:
                created.done()
            phase = _Phase.RUNNING
            if adopt is None and on_started is not None:
                on_started(job.target.id)
            sampler = job.usage()
            started = time.monotonic()
            try:
                exit_ = self._wait(job, started, timeout_seconds, follower, spec.image.name)
            finally:
                usage = sampler.stop()
            if exit_ is None:
                self._halt(job, follower, self._termination_timeout)
                phase = _Phase.ENDED
                raise self._timed_out(job, spec, timeout_seconds or 0.0, stdout, stderr)
            follower.job_ended()
            phase = _Phase.ENDED
            duration = time.monotonic() - started
            follower.finish(self._drain_timeout)
            _raise_failure(follower, job.target, spec.image.name)
            metadata = {**job.metadata(), **(after_exit(job, exit_) if after_exit else {})}
            if remove_in_background:
                removal = Removal(job.remove, job.target)
            return JobOutcome(job.target, exit_, duration, removal, usage, metadata)
        except BaseException as exc:
            interrupted = not isinstance(exc, PipesDockerError)
            with deferred_signals():
                if on_interrupt is not None and interrupted:
                    on_interrupt(exc)
                if (
                    job is not None
                    and follower is not None
                    and (phase is _Phase.RUNNING or (phase is _Phase.STARTING and interrupted))
                ):
                    grace = self._termination_timeout if graceful_stop else 0.0
                    self._halt(job, follower, grace)
                    phase = _Phase.ENDED
            raise
        finally:
            with deferred_signals():
                if created is not None:
                    created.done(reraise=False)  # the run's own error, if any, comes first
                if follower is not None:
                    if phase is _Phase.STARTING:
                        follower.abort()  # never started: nothing more will come
                    else:
                        follower.finish(self._drain_timeout)
                if job is not None and phase is not _Phase.NOT_CREATED and removal is None:
                    job.remove()

    def _wait(
        self,
        job: Job,
        started: float,
        timeout_seconds: float | None,
        follower: OutputFollower,
        image: str,
    ) -> JobExit | None:
        """The job's exit, or ``None`` once ``timeout_seconds`` have passed.

        Raises:
            PipesDockerOutputError: The output could not be carried while the job ran: waiting
                on would only lose more, so the run fails now (and the job is stopped).
        """
        deadline = None if timeout_seconds is None else started + timeout_seconds
        while True:
            _raise_failure(follower, job.target, image)
            step = self._poll_interval
            if deadline is not None:
                step = min(step, deadline - time.monotonic())
                if step <= 0:
                    return None
            exit_ = job.wait(max(step, 0.01))
            if exit_ is not None:
                return exit_

    def _halt(self, job: Job, follower: OutputFollower, grace_seconds: float) -> None:
        """Stop a running job and read the rest of its output.

        If the backend will not stop it, remove it at once: a running job's output never ends,
        so waiting for the rest of it would only wait out the drain timeout.
        """
        try:
            job.stop(grace_seconds)
            follower.job_ended()
        except Exception:
            logger.warning("Stopping %s failed; removing it", job.target, exc_info=True)
            try:
                job.remove()
                follower.job_ended()
            except Exception:
                logger.warning("Removing %s failed", job.target, exc_info=True)
                follower.abort()
                return
        follower.finish(self._drain_timeout)

    def _timed_out(
        self,
        job: Job,
        spec: JobSpec,
        timeout_seconds: float,
        stdout: ByteSink,
        stderr: ByteSink,
    ) -> PipesDockerTimeoutError:
        tail, tail_stream = output_tail(stdout, stderr, TAIL_LINES)
        return PipesDockerTimeoutError(
            image=spec.image.name,
            target=job.target,
            timeout_seconds=timeout_seconds,
            grace_seconds=self._termination_timeout,
            stderr_tail=tail,
            tail_stream=tail_stream,
        )


class _WhileStarting:
    """``call(job_id)`` run on a thread while the engine starts the job.

    The thread is made at once and waits for :meth:`go`, given just before the start request:
    what ``call`` does (writing to Dagster's event log, say) then overlaps the engine's work
    instead of delaying the request. :meth:`done` waits for it (letting it run first if
    :meth:`go` never came) and raises what it raised.
    """

    def __init__(self, call: Callable[[str], None], job_id: str) -> None:
        self._go = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(call, job_id), name="pipes-docker-created", daemon=True
        )
        self._thread.start()

    def _run(self, call: Callable[[str], None], job_id: str) -> None:
        self._go.wait()
        try:
            call(job_id)
        except BaseException as exc:
            self._error = exc

    def go(self) -> None:
        self._go.set()

    def done(self, *, reraise: bool = True) -> None:
        self._go.set()
        self._thread.join()
        error, self._error = self._error, None
        if error is None:
            return
        if reraise:
            raise error
        logger.warning("on_created failed: %s: %s", type(error).__name__, error)


def _raise_failure(follower: OutputFollower, target: RunTarget, image: str) -> None:
    """Raise if carrying the output failed before it ended."""
    exc = follower.failure()
    if exc is None:
        return
    raise PipesDockerOutputError(
        f"Reading the output of {target} (image {image!r}) failed: {type(exc).__name__}: {exc}."
        " Output and Pipes messages after that point were lost, so the run is failed rather"
        " than reported as a success."
    ) from exc
