"""Signals while a container runs: unwind on SIGTERM, and never cut cleanup short.

Python turns SIGINT into ``KeyboardInterrupt``, which unwinds through the launcher and so stops
and removes the container. SIGTERM's default action kills the process on the spot, skipping every
``finally``: :func:`sigterm_unwinds` makes it unwind the same way, then re-delivers it once
cleanup is done, so the process still ends as SIGTERM asked. Where someone else (Dagster's run
worker, say) already handles SIGTERM, their handler is left alone: it raises, and we unwind.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pipes_docker.errors import PipesDockerInterrupted

__all__ = ["deferred_signals", "sigterm_unwinds"]

_DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`PipesDockerInterrupted` instead of killing.

    After the block has unwound, SIGTERM is restored and delivered again, so the process still
    terminates. Does nothing outside the main thread or when SIGTERM already has a handler.
    """
    if not _in_main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    received: list[int] = []

    def unwind(signum: int, frame: object) -> None:
        if not received:
            received.append(signum)
            raise PipesDockerInterrupted("the orchestrator received SIGTERM")

    signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if received:
            signal.raise_signal(signal.SIGTERM)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while cleanup runs; deliver them once it is done.

    A second Ctrl-C or SIGTERM must not cut the removal of a container short. Only the main
    thread can set handlers; elsewhere signals cannot reach this code anyway.
    """
    if not _in_main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame: object) -> None:
        held.append(signum)

    previous = {signum: signal.signal(signum, hold) for signum in _DEFERRED_SIGNALS}
    try:
        yield
    finally:
        for deferred, handler in previous.items():
            signal.signal(deferred, handler if handler is not None else signal.SIG_DFL)
        for received in dict.fromkeys(held):
            signal.raise_signal(received)
