"""Errors raised by pipes-docker.

Every error derives from :class:`PipesDockerError`, which is itself a dagster
``DagsterPipesExecutionError``, so code that already handles failures of dagster's own Pipes
clients handles these too. Messages are written to diagnose: they name the image and the
container, give the exit code and the last lines the container wrote to stderr, and say what to
try next. They never include environment values, which may hold secrets.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Sequence

from dagster._core.errors import DagsterPipesExecutionError

from pipes_docker.backend import RunTarget

__all__ = [
    "PipesDockerChannelError",
    "PipesDockerConfigError",
    "PipesDockerContainerError",
    "PipesDockerEngineError",
    "PipesDockerError",
    "PipesDockerFilesError",
    "PipesDockerImageError",
    "PipesDockerInterrupted",
    "PipesDockerLaunchError",
    "PipesDockerOutputError",
    "PipesDockerOutputRuleError",
    "PipesDockerTimeoutError",
]


class PipesDockerError(DagsterPipesExecutionError):
    """Root of every error pipes-docker raises."""


class PipesDockerOutputRuleError(PipesDockerError):
    """An output rule cannot work: its pattern does not compile, or it names no asset it can
    report for. Raised before the job starts."""


class PipesDockerFilesError(PipesDockerError):
    """Files a run asked to bring back from its job are missing, too large, or cannot be
    copied out (``on_problem="error"``), or the backend cannot reach the job's files."""


class PipesDockerConfigError(PipesDockerError, ValueError):
    """An argument of the client or of a run is wrong: a reserved or invalid keyword, an
    unknown pull policy, an ``EnvVar`` whose variable is not set. Also a ``ValueError``."""


class PipesDockerReporterError(PipesDockerError):
    """The shell reporter cannot serve this run: its messages go where a shell cannot write."""


class PipesDockerEngineError(PipesDockerError):
    """The Docker engine could not be reached, or answered with an error we cannot act on.

    Attributes:
        transient: Whether trying again may succeed (unreachable, timed out, 5xx, 429).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class PipesDockerChannelError(PipesDockerError):
    """The Pipes channel cannot work with this engine (it does not see the orchestrator's files)."""


class PipesDockerOutputError(PipesDockerError):
    """Reading the container's output or its messages failed; what it wrote may be incomplete.

    Raised instead of reporting success, so that lost output or messages never pass silently.
    The cause is chained.
    """


class PipesDockerInterrupted(KeyboardInterrupt):
    """The orchestrator got SIGTERM while a container ran; raised to unwind and clean up."""


class PipesDockerImageError(PipesDockerError):
    """The image is missing, cannot be pulled, or cannot be inspected.

    ``missing`` says the engine has no such image (and nothing was pulled to change that).
    """

    def __init__(self, message: str, *, image: str, missing: bool = False) -> None:
        super().__init__(message)
        self.image = image
        self.missing = missing


class _TargetedError(PipesDockerError):
    """An error about one job: ``target`` names the container or service (when there is one)."""

    image: str | None
    target: RunTarget | None

    @property
    def container_id(self) -> str | None:
        """The container's id, when the job was a container."""
        if self.target is not None and self.target.kind == "container":
            return self.target.id
        return None

    @property
    def node(self) -> str | None:
        """The Swarm node the job ran on, when it was a Swarm task that got one."""
        return self.target.node if self.target is not None else None


class PipesDockerLaunchError(_TargetedError):
    """The job could not be made or started (a container, a Swarm service or its task)."""

    def __init__(self, message: str, *, image: str | None, target: RunTarget | None = None) -> None:
        super().__init__(message)
        self.image = image
        self.target = target


class PipesDockerMountSourceError(PipesDockerLaunchError):
    """The engine refused to create the container: it has no path to bind-mount from.

    Raised for a channel's own mounts (not a user's ``volumes``), which name a dir the
    orchestrator made for this run: the engine does not see the orchestrator's files (any more).

    Attributes:
        host_path: The path the engine was asked to mount.
    """

    def __init__(self, message: str, *, image: str, host_path: str) -> None:
        super().__init__(message, image=image)
        self.host_path = host_path


class PipesDockerTimeoutError(_TargetedError):
    """The job ran longer than the run's ``timeout_seconds`` and was stopped."""

    def __init__(
        self,
        *,
        image: str,
        target: RunTarget,
        timeout_seconds: float,
        grace_seconds: float,
        stderr_tail: Sequence[str] = (),
        tail_stream: str = "stderr",
    ) -> None:
        self.image = image
        self.target = target
        self.timeout_seconds = timeout_seconds
        self.grace_seconds = grace_seconds
        self.stderr_tail = list(stderr_tail)
        lines = [
            f"{_capitalized(target)} (image {image!r}) timed out after {timeout_seconds:g}"
            f" seconds and was stopped (SIGTERM, then SIGKILL after {grace_seconds:g} s)."
            " Raise timeout_seconds if the job needs longer.",
            *_quote_tail(self.stderr_tail, tail_stream),
        ]
        super().__init__("\n".join(lines))


class PipesDockerContainerError(_TargetedError):
    """The job ran and ended badly: non-zero exit, a signal, or the OOM killer.

    Attributes:
        image: The image the job ran.
        target: The (now removed) container or service, and the node it ran on.
        exit_code: The job's exit status.
        oom_killed: Whether the kernel's OOM killer ended it.
        signal_name: The signal that ended it, when the exit code says one did.
        stderr_tail: The last lines it wrote to stderr (or stdout when stderr was empty).
    """

    def __init__(
        self,
        *,
        image: str,
        target: RunTarget,
        exit_code: int,
        oom_killed: bool = False,
        memory_limit: int | None = None,
        stderr_tail: Sequence[str] = (),
        tail_stream: str = "stderr",
        engine_error: str | None = None,
    ) -> None:
        self.image = image
        self.target = target
        self.exit_code = exit_code
        self.oom_killed = oom_killed
        self.memory_limit = memory_limit
        self.signal_name = signal_name_for_exit_code(exit_code)
        self.stderr_tail = list(stderr_tail)
        lines = [f"{_capitalized(target)} (image {image!r}) exited with code {exit_code}."]
        if engine_error:
            lines.append(f"The engine says: {engine_error}.")
        if oom_killed:
            limit = f" of {format_bytes(memory_limit)}" if memory_limit else ""
            lines.append(
                "It was killed by the kernel's OOM killer: it used more than its memory"
                f" limit{limit}. Raise mem_limit in container_kwargs or make the job use less"
                " memory."
            )
        elif self.signal_name:
            lines.append(f"It was killed by {self.signal_name}.")
        lines.extend(_quote_tail(self.stderr_tail, tail_stream))
        super().__init__("\n".join(lines))


# What docker-init (tini, the default with init=True) writes when it cannot exec the program.
_EXEC_FAILED = re.compile(r"^\[FATAL tini \(\d+\)\] exec (?P<program>.+) failed: (?P<reason>.+)$")


def job_failure(
    *,
    image: str,
    target: RunTarget,
    exit_code: int,
    oom_killed: bool = False,
    memory_limit: int | None = None,
    stderr_tail: Sequence[str] = (),
    tail_stream: str = "stderr",
    engine_error: str | None = None,
) -> PipesDockerError:
    """The error for a job that ended with a non-zero exit.

    A program that could not be started at all (missing from the image, not executable) is a
    launch failure, whichever way the engine reports it: without an init process the engine's
    start fails ("executable file not found"), with one (docker-init, the default) the init
    reports the failed exec and exits 126/127. Anything else ran and failed.
    """
    last = stderr_tail[-1] if stderr_tail and tail_stream == "stderr" else ""
    failed_exec = _EXEC_FAILED.match(last) if exit_code in (126, 127) else None
    if failed_exec is not None:
        return PipesDockerLaunchError(
            f"{_capitalized(target)} (image {image!r}) could not start its program"
            f" {failed_exec['program']}: {failed_exec['reason']} (exit code {exit_code})."
            " Check the command (or the image's ENTRYPOINT and CMD): the program must exist in"
            " the image and be executable.",
            image=image,
            target=target,
        )
    return PipesDockerContainerError(
        image=image,
        target=target,
        exit_code=exit_code,
        oom_killed=oom_killed,
        memory_limit=memory_limit,
        stderr_tail=stderr_tail,
        tail_stream=tail_stream,
        engine_error=engine_error,
    )


def _capitalized(target: RunTarget) -> str:
    text = str(target)
    return text[:1].upper() + text[1:]


def signal_name_for_exit_code(exit_code: int) -> str | None:
    """Name the signal an exit code of 128+N reports, as shells and docker-init do."""
    if 128 < exit_code < 128 + 65:
        try:
            return signal.Signals(exit_code - 128).name
        except ValueError:
            return f"signal {exit_code - 128}"
    return None


def _quote_tail(tail: Sequence[str], tail_stream: str) -> list[str]:
    if not tail:
        return ["It wrote nothing to stderr or stdout."]
    heading = "Last line" if len(tail) == 1 else f"Last {len(tail)} lines"
    return [f"{heading} of {tail_stream}:", *(f"    {line}" for line in tail)]


def format_bytes(size: int) -> str:
    """Format a byte count the way `docker stats` does (binary units)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
