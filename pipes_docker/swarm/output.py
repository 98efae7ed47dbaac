"""A Swarm service's output: followed live, then read once more from the start to complete it.

The manager's follow stream never ends by itself and may lag far behind the task (19 of 105 MB
had arrived when a 100 MiB job ended). So the live stream only brings output early; once the
task has ended the logs are read again without follow, which ends with everything the node kept,
and only the bytes of each stream beyond what the live stream delivered are passed on.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable

from pipes_docker.demux import STDERR, STDOUT, FrameDemuxer
from pipes_docker.errors import PipesDockerOutputError
from pipes_docker.messages import ByteSink
from pipes_docker.pump import CHUNK_SIZE, OutputPump
from pipes_docker.swarm.engine import SwarmEngine

__all__ = ["LogFollower"]

# How long stopping the live stream waits for its thread; it feeds nothing more either way.
_STOP_SECONDS = 5.0
# At the task's end the live stream feeds on until its read has waited this long with nothing
# new (what its connection already held is in), but never longer than _CATCH_UP_SECONDS.
_QUIET_SECONDS = 0.05
_CATCH_UP_SECONDS = 1.0


class LogFollower:
    """Follows a service's logs while its task runs; completes them once it has ended.

    Args:
        engine: The manager.
        service_id: The service.
        stdout: Where the task's stdout goes.
        stderr: Where its stderr goes.
        readable: Whether the logs can be read whole now (the task ran to its end and the
            service is still there); when not, finishing only stops the live stream.
    """

    def __init__(
        self,
        engine: SwarmEngine,
        service_id: str,
        stdout: ByteSink,
        stderr: ByteSink,
        *,
        readable: Callable[[], bool],
    ) -> None:
        self._engine = engine
        self._service_id = service_id
        self._readable = readable
        self._counted = {STDOUT: _CountingSink(stdout), STDERR: _CountingSink(stderr)}
        self._done = False
        self._pump = OutputPump(
            engine.logs(service_id, follow=True),
            FrameDemuxer(self._counted).feed,
            # A broken follow stream loses nothing: the read after the task's end is complete.
            harmless=_is_transport_failure,
            name="pipes-docker-swarm-logs",
        )

    def job_ended(self) -> None:
        pass

    def finish(self, idle_timeout: float) -> None:
        if self._done:
            return
        self._done = True
        readable = self._readable()
        if readable:
            self._pump.settle(quiet_seconds=_QUIET_SECONDS, most_seconds=_CATCH_UP_SECONDS)
        self._pump.stop(_STOP_SECONDS)
        try:
            if readable and self._pump.failure() is None:
                self._read_rest()
        finally:
            self._close()

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._pump.stop(_STOP_SECONDS)
        self._close()

    def failure(self) -> BaseException | None:
        return self._pump.failure()

    def _close(self) -> None:
        for sink in self._counted.values():
            with contextlib.suppress(Exception):
                sink.close()

    def _read_rest(self) -> None:
        """Read the ended task's output from the start; pass on what the live stream missed."""
        resumed = {stream: _Resumed(sink) for stream, sink in self._counted.items()}
        demuxer = FrameDemuxer(resumed)
        stream = self._engine.logs(self._service_id, follow=False)
        try:
            while chunk := stream.read(CHUNK_SIZE):
                demuxer.feed(chunk)
        finally:
            stream.close()
        names = {STDOUT: "stdout", STDERR: "stderr"}
        short = [names[stream] for stream, sink in resumed.items() if sink.missing]
        if short:
            raise PipesDockerOutputError(
                f"The node's copy of the task's {' and '.join(short)} no longer begins with the"
                " output that had already arrived: its log driver rotated or dropped output (a"
                " max-size / max-file setting?), so the rest of the output and messages cannot"
                " be told apart from what arrived. Give the task's log driver room for the"
                " whole job's output."
            )


class _CountingSink:
    """Passes bytes on to its sink and counts them: how far this stream has been delivered.

    ``checksum`` (CRC-32 of every byte delivered) lets a read from the start prove it begins
    with those bytes: a count alone cannot tell a complete copy from one the node rotated, once
    that copy is longer than what was delivered.
    """

    def __init__(self, sink: ByteSink) -> None:
        self.sink = sink
        self.delivered = 0
        self.checksum = 0
        self._closed = False

    def write(self, data: bytes | memoryview) -> None:
        self.sink.write(data)
        self.delivered += len(data)
        self.checksum = zlib.crc32(data, self.checksum)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.sink.close()

    def tail_lines(self, count: int) -> list[str]:
        return self.sink.tail_lines(count)


class _Resumed:
    """For a read from the start: drops what was delivered already, passes on the rest.

    Only a read whose first bytes are exactly the delivered ones (same length, same CRC-32) is
    resumed; one that differs began later (the node rotated the head away) and passes nothing
    on: counted against it, its rest would be shifted and skip output nobody saw.
    """

    def __init__(self, sink: _CountingSink) -> None:
        self._sink = sink
        self._skip = sink.delivered
        self._checksum = 0
        self._diverged = False

    @property
    def missing(self) -> bool:
        """Whether the read from the start does not begin with what was delivered already."""
        return self._skip > 0 or self._diverged

    def write(self, data: bytes | memoryview) -> None:
        if self._diverged:
            return
        if self._skip:
            skipped = data[: self._skip]
            self._checksum = zlib.crc32(skipped, self._checksum)
            self._skip -= len(skipped)
            if self._skip:
                return
            if self._checksum != self._sink.checksum:
                self._diverged = True
                return
            data = data[len(skipped) :]
            if not data:
                return
        self._sink.write(data)


def _is_transport_failure(exc: BaseException) -> bool:
    return isinstance(exc, OSError | ConnectionError) or "urllib3" in type(exc).__module__
