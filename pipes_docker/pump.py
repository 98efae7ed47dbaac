"""Carry a job's output stream into the run's sinks, on a thread, losing nothing silently.

Both backends read their job's output the same way: a stream of attach-style frames (stdout and
stderr apart) read in large chunks on a background thread, so that the main thread stays free to
wait for the job and to take signals. :class:`OutputPump` is that reader. What differs is what the
stream's end means (a container's attach stream ends with the container; a Swarm service's
followed logs never end by themselves) and which failures lose output; the caller says so.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from pipes_docker.backend import OutputStream

__all__ = ["CHUNK_SIZE", "OutputPump"]

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 16


class OutputPump:
    """Reads ``stream`` on a thread and hands each chunk to ``feed`` until the stream ends.

    Args:
        stream: The output stream.
        feed: Where each chunk goes (a demuxer feeding the sinks).
        at_end: Called on the thread when the stream has ended; raises when that end means
            output was cut off (the job still runs).
        harmless: Which read failures lose nothing (a followed stream whose content is read
            again later); other failures are kept and make :meth:`failure` say why.
        on_done: Called on the thread when it stops, whatever happened (closes the sinks);
            what it raises is a failure too.
    """

    def __init__(
        self,
        stream: OutputStream,
        feed: Callable[[bytes], None],
        *,
        at_end: Callable[[], None] | None = None,
        harmless: Callable[[BaseException], bool] | None = None,
        on_done: Callable[[], None] | None = None,
        name: str = "pipes-docker-output",
    ) -> None:
        self._stream = stream
        self._feed = feed
        self._at_end = at_end
        self._harmless = harmless
        self._on_done = on_done
        self._stopping = False
        self._discard = False
        self._feeding = threading.Lock()
        self._busy = False
        # When the read now blocked began (None while a chunk is being fed): how long the
        # stream has had nothing new for us.
        self._waiting_since: float | None = None
        self._last_read = time.monotonic()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._pump(self._deliver)
            if self._at_end is not None and not self._stopping:
                self._at_end()
        except BaseException as exc:
            if not self._stopping and not (self._harmless and self._harmless(exc)):
                self._failure = exc
                # Keep reading, so a job writing to a full pipe does not block forever.
                with contextlib.suppress(BaseException):
                    self._pump(lambda chunk: None)
        finally:
            if self._on_done is not None:
                try:
                    self._on_done()
                except BaseException as exc:
                    self._failure = self._failure or exc

    def _pump(self, feed: Callable[[bytes], None]) -> None:
        while True:
            self._waiting_since = time.monotonic()
            chunk = self._stream.read(CHUNK_SIZE)
            self._waiting_since = None
            if not chunk:
                return
            self._busy = True
            feed(chunk)
            self._busy = False
            self._last_read = time.monotonic()

    def _deliver(self, chunk: bytes) -> None:
        # A chunk read is fed even while stopping: stop() waits for it. Only once stop() gave
        # up on this thread is nothing fed any more.
        with self._feeding:
            if not self._discard:
                self._feed(chunk)

    def settle(self, *, quiet_seconds: float, most_seconds: float) -> None:
        """Let the thread feed what the connection already holds: return once a read has
        waited ``quiet_seconds`` for more, or after ``most_seconds`` in all.

        Bytes that reached this process are then not dropped on the hope that the engine
        still has them (a node may have rotated its copy away).
        """
        deadline = time.monotonic() + most_seconds
        while self._thread.is_alive() and time.monotonic() < deadline:
            since = self._waiting_since
            if since is not None and time.monotonic() - since >= quiet_seconds:
                return
            time.sleep(quiet_seconds / 5)

    def stop(self, join_seconds: float = 5.0) -> None:
        """Stop now; once this returns nothing more is fed, even if a blocked read wakes up
        later (a transport whose socket cannot be shut down from here)."""
        self._stopping = True
        self._stream.close()
        self._thread.join(join_seconds)
        with self._feeding:
            self._discard = True

    def abort(self) -> None:
        """Cut the stream off now; what has not arrived is lost. Waits for the thread."""
        self._stopping = True
        self._stream.close()
        self._thread.join()

    def drain(self, idle_timeout: float) -> None:
        """Wait for the stream to end; cut it off once it has been idle for ``idle_timeout``.

        Idle, not in all: the thread may still be busy with output and messages the job wrote
        just before it ended (handing each message to Dagster takes time), and all of that must
        arrive. Only a stream on which nothing has come for ``idle_timeout`` is given up.
        """
        while True:
            self._thread.join(min(1.0, idle_timeout))
            if not self._thread.is_alive():
                break
            if not self._busy and time.monotonic() - self._last_read > idle_timeout:
                logger.warning(
                    "The engine sent nothing more on the job's output stream for %ss after the"
                    " job ended; closing it.",
                    idle_timeout,
                )
                break
        self.abort()

    def failure(self) -> BaseException | None:
        return self._failure
