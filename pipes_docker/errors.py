"""Errors raised by pipes-docker.

Every error derives from :class:`PipesDockerError`, which is itself a dagster
``DagsterPipesExecutionError``, so code that already handles failures of dagster's own Pipes
clients handles these too. Messages are written to diagnose: they name the image and the
container, give the exit code and the last lines the container wrote to stderr, and say what to
try next. They never include environment values, which may hold secrets.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence

from dagster._core.errors import DagsterPipesExecutionError

__all__ = [
    "PipesDockerChannelError",
    "PipesDockerContainerError",
    "PipesDockerEngineError",
    "PipesDockerError",
    "PipesDockerImageError",
    "PipesDockerInterrupted",
    "PipesDockerLaunchError",
    "PipesDockerOutputError",
    "PipesDockerTimeoutError",
]


class PipesDockerError(DagsterPipesExecutionError):
    """Root of every error pipes-docker raises."""


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
    """The image is missing, cannot be pulled, or cannot be inspected."""

    def __init__(self, message: str, *, image: str) -> None:
        super().__init__(message)
        self.image = image


class PipesDockerLaunchError(PipesDockerError):
    """The container could not be created or started."""

    def __init__(self, message: str, *, image: str, container_id: str | None) -> None:
        super().__init__(message)
        self.image = image
        self.container_id = container_id


class PipesDockerMountSourceError(PipesDockerLaunchError):
    """The engine refused to create the container: it has no path to bind-mount from.

    Raised for a channel's own mounts (not a user's ``volumes``), which name a dir the
    orchestrator made for this run: the engine does not see the orchestrator's files (any more).

    Attributes:
        host_path: The path the engine was asked to mount.
    """

    def __init__(self, message: str, *, image: str, host_path: str) -> None:
        super().__init__(message, image=image, container_id=None)
        self.host_path = host_path


class PipesDockerTimeoutError(PipesDockerError):
    """The container ran longer than the run's ``timeout_seconds`` and was stopped."""

    def __init__(
        self, message: str, *, image: str, container_id: str, timeout_seconds: float
    ) -> None:
        super().__init__(message)
        self.image = image
        self.container_id = container_id
        self.timeout_seconds = timeout_seconds


class PipesDockerContainerError(PipesDockerError):
    """The container ran and ended badly: non-zero exit, a signal, or the OOM killer.

    Attributes:
        image: The image the container ran.
        container_id: The id of the (now removed) container.
        exit_code: The container's exit status.
        oom_killed: Whether the kernel's OOM killer ended it.
        signal_name: The signal that ended it, when the exit code says one did.
        stderr_tail: The last lines it wrote to stderr (or stdout when stderr was empty).
        node: The Swarm node it ran on (``PipesDockerSwarmClient``); ``None`` on one host.
    """

    def __init__(
        self,
        *,
        image: str,
        container_id: str,
        exit_code: int,
        oom_killed: bool,
        memory_limit: int | None,
        stderr_tail: Sequence[str],
        tail_stream: str = "stderr",
        engine_error: str | None = None,
        node: str | None = None,
    ) -> None:
        self.image = image
        self.node = node
        self.container_id = container_id
        self.exit_code = exit_code
        self.oom_killed = oom_killed
        self.memory_limit = memory_limit
        self.signal_name = signal_name_for_exit_code(exit_code)
        self.stderr_tail = list(stderr_tail)
        super().__init__(
            describe_container_failure(
                image=image,
                container_id=container_id,
                exit_code=exit_code,
                oom_killed=oom_killed,
                memory_limit=memory_limit,
                tail=self.stderr_tail,
                tail_stream=tail_stream,
                engine_error=engine_error,
                node=node,
            )
        )


def signal_name_for_exit_code(exit_code: int) -> str | None:
    """Name the signal an exit code of 128+N reports, as shells and docker-init do."""
    if 128 < exit_code < 128 + 65:
        try:
            return signal.Signals(exit_code - 128).name
        except ValueError:
            return f"signal {exit_code - 128}"
    return None


def describe_container_failure(
    *,
    image: str,
    container_id: str,
    exit_code: int,
    oom_killed: bool,
    memory_limit: int | None,
    tail: Sequence[str],
    tail_stream: str,
    engine_error: str | None = None,
    node: str | None = None,
) -> str:
    """Build the message of a :class:`PipesDockerContainerError`."""
    where = f", on Swarm node {node!r}" if node else ""
    lines = [
        f"Container {container_id[:12]} (image {image!r}{where}) exited with code {exit_code}."
    ]
    if engine_error:
        lines.append(f"The engine says: {engine_error}.")
    signal_name = signal_name_for_exit_code(exit_code)
    if oom_killed:
        limit = f" of {format_bytes(memory_limit)}" if memory_limit else ""
        lines.append(
            f"It was killed by the kernel's OOM killer: it used more than its memory limit{limit}."
            " Raise mem_limit in container_kwargs or make the job use less memory."
        )
    elif signal_name:
        lines.append(f"It was killed by {signal_name}.")
    lines.extend(_quote_tail(tail, tail_stream))
    return "\n".join(lines)


def describe_timeout(
    *,
    image: str,
    container_id: str,
    timeout_seconds: float,
    grace_seconds: float,
    tail: Sequence[str],
    tail_stream: str,
) -> str:
    """Build the message of a :class:`PipesDockerTimeoutError`."""
    lines = [
        f"Container {container_id[:12]} (image {image!r}) timed out after {timeout_seconds:g}"
        f" seconds and was stopped (SIGTERM, then SIGKILL after {grace_seconds:g} s)."
        " Raise timeout_seconds if the job needs longer.",
        *_quote_tail(tail, tail_stream),
    ]
    return "\n".join(lines)


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
