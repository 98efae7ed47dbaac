"""Removals left to run in the background: a run that ended well does not wait for them.

A job that ran to its end is removed (its container or Swarm service, its mounted temp dir) on
threads of their own while the run returns. They are not daemons: a process that ends normally
waits for them (Python joins such threads before it exits, a Dagster step process included), so
nothing is left behind because a run returned first. :func:`wait_for_removals` waits for them
where something must see them done first.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

__all__ = ["Removal", "remove_in_background", "run_removals", "wait_for_removals"]

logger = logging.getLogger(__name__)


class Removal:
    """One removal (a job, a temp dir) on a thread of its own, overlapping what the caller does
    meanwhile.

    The thread is not a daemon: a process that ends normally waits for it (Python joins such
    threads before it exits, a Dagster step process included), so nothing is left behind
    because its run returned first.
    """

    def __init__(self, remove: Callable[[], None], what: object) -> None:
        self.what = what
        self._error: BaseException | None = None
        self._detached = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._remove, args=(remove,), name="pipes-docker-remove"
        )
        with _pending_lock:
            _pending.add(self)
        self._thread.start()

    def _remove(self, remove: Callable[[], None]) -> None:
        try:
            remove()
        except BaseException as exc:
            with self._lock:
                self._error = exc
                detached = self._detached
            if detached:
                _log_failed_removal(self.what, exc)
        finally:
            with _pending_lock:
                _pending.discard(self)

    def join(self, timeout: float | None = None) -> None:
        """Block until the removal has ended (or ``timeout`` seconds have passed)."""
        self._thread.join(timeout)

    def wait(self) -> None:
        """Block until the job is gone; raise what removing it raised."""
        self.join()
        if self._error is not None:
            raise self._error

    def detach(self) -> None:
        """Let the removal end on its own; a failure is logged (nobody waits to raise it)."""
        with self._lock:
            self._detached = True
            error = self._error
        if error is not None:
            _log_failed_removal(self.what, error)


_pending: set[Removal] = set()
_pending_lock = threading.Lock()


def _log_failed_removal(what: object, exc: BaseException) -> None:
    logger.warning(
        "Removing %s failed after its run ended: %s. `pipes-docker sweep` removes what is left.",
        what,
        exc,
    )


def wait_for_removals(timeout: float | None = None) -> bool:
    """Wait until every removal this process started in the background has ended.

    A run returns as soon as its job's outcome is known; the ended job (container or Swarm
    service) is removed on a thread meanwhile. Python waits for those threads before the
    process exits, so nothing is left behind either way: call this where something must see
    the job gone first (a test's check, a script listing containers). Returns whether all ended
    within ``timeout`` seconds (``None``: wait for as long as they take).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with _pending_lock:
            pending = list(_pending)
        if not pending:
            return True
        for removal in pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            removal.join(left)
            if deadline is not None and time.monotonic() >= deadline:
                with _pending_lock:
                    return not _pending


@contextlib.contextmanager
def run_removals() -> Iterator[list[Removal]]:
    """Collects the removals a run starts in the background; waits for them if the run fails.

    A run that ends well lets them finish on their own (:func:`wait_for_removals`); when the
    block raises, they are waited for, so a failed run leaves nothing behind when it returns,
    and a removal that fails too is logged: the run's own error is the one to raise.
    """
    removals: list[Removal] = []
    try:
        yield removals
    except BaseException:
        for removal in removals:
            try:
                removal.wait()
            except Exception:
                logger.warning("Removing the run's job failed", exc_info=True)
        raise
    for removal in removals:
        removal.detach()


def remove_in_background(remove: Callable[[], None], what: object) -> None:
    """Run ``remove`` on a thread nobody waits for; a failure is logged."""
    Removal(remove, what).detach()
