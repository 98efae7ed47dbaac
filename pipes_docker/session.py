"""What every pipes-docker client does around one run, whatever it runs the job on.

The single-host client and the Swarm client differ in what they drive (a container, a service)
but hand a run's output to the same places and speak to Dagster the same way: the output sinks
(forwarded to the orchestrator's stdout/stderr, kept in log files), the note that a job without
Pipes messages is fine, and the op context under an asset context.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

from dagster import AssetExecutionContext, AssetKey, OpExecutionContext
from dagster._core.errors import DagsterInvalidPropertyError

from pipes_docker.demux import LineSink, ProcessStream, StreamTarget

__all__ = [
    "NoMessagesNote",
    "interrupt_logger",
    "legacy_jobs_noted_at_info",
    "log_paths",
    "op_context",
    "output_sinks",
    "selected_asset_keys",
]


def log_paths(log_dir: str | None, run_name: str) -> dict[str, str]:
    """Where a run keeps each stream's output: none without ``log_dir``."""
    if log_dir is None:
        return {}
    directory = os.path.join(log_dir, run_name)
    return {stream: os.path.join(directory, f"{stream}.log") for stream in ("stdout", "stderr")}


@contextmanager
def output_sinks(
    *,
    forward_stdio: bool,
    log_dir: str | None,
    run_name: str,
    watch: Callable[[str], StreamTarget | None] | None = None,
) -> Iterator[tuple[LineSink, LineSink]]:
    """The stdout and stderr sinks of one run; the log files close on exit.

    ``watch`` gives a stream's watcher (the output rules), a target that sees its lines too.
    """
    with ExitStack() as stack:
        sinks = []
        paths = log_paths(log_dir, run_name)
        for stream in ("stdout", "stderr"):
            targets: list[StreamTarget] = []
            if forward_stdio:
                targets.append(ProcessStream(stream))
            if stream in paths:
                path = paths[stream]
                os.makedirs(os.path.dirname(path), exist_ok=True)
                targets.append(stack.enter_context(open(path, "w", encoding="utf-8")))
            watcher = watch(stream) if watch is not None else None
            if watcher is not None:
                targets.append(watcher)
            sinks.append(LineSink(targets))
        yield sinks[0], sinks[1]


def interrupt_logger(
    context: OpExecutionContext | AssetExecutionContext, what: str
) -> Callable[[BaseException], None]:
    def log(exc: BaseException) -> None:
        context.log.info(f"[pipes-docker] run interrupted ({type(exc).__name__}); stopping {what}.")

    return log


class NoMessagesNote(logging.Filter):
    """Turn dagster's "did not receive any messages" warning into one info line, true to the run.

    A job that does not speak Pipes (a legacy image, a shell script) is a supported way to use
    the client, not a fault: its exit code and output say how it went. A job that never ran (its
    create or start failed, its program is missing) sent no messages for another reason, which
    the run's error gives: the note then says only that, not the hints about Pipes.
    """

    def __init__(self) -> None:
        super().__init__()
        self._ran = False

    def job_ran(self, ran: bool = True) -> None:
        """Say whether the job's program ran (call once the launcher knows)."""
        self._ran = ran

    def on_started(self, job_id: str) -> None:
        """A launcher's ``on_started`` callback: the job ran."""
        self._ran = True

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and str(record.msg).startswith(_NO_MESSAGES):
            record.levelno, record.levelname = logging.INFO, "INFO"
            if not self._ran:
                record.msg = (
                    "[pipes-docker] No Pipes messages: the job never ran (the run's error says"
                    " why)."
                )
                record.args = ()
        return True


_NO_MESSAGES = "[pipes] did not receive any messages from external process"


@contextmanager
def legacy_jobs_noted_at_info(
    context: OpExecutionContext | AssetExecutionContext,
) -> Iterator[NoMessagesNote]:
    log = context.log
    notice = NoMessagesNote()
    log.addFilter(notice)
    try:
        yield notice
    finally:
        log.removeFilter(notice)


def selected_asset_keys(context: OpExecutionContext | AssetExecutionContext) -> list[AssetKey]:
    """The assets the step materializes; none for a plain op."""
    try:
        return sorted(op_context(context).selected_asset_keys)
    except DagsterInvalidPropertyError:  # an op outside any asset
        return []


def op_context(context: OpExecutionContext | AssetExecutionContext) -> OpExecutionContext:
    """The op context under an asset context: the same step, without deprecated wrappers."""
    if isinstance(context, AssetExecutionContext):
        return context.op_execution_context
    return context
