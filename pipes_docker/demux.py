"""Demultiplex a container's attach stream into per-stream line sinks.

With ``tty=False`` the engine multiplexes stdout and stderr on one connection: every payload is
preceded by an 8-byte header (stream id, three zero bytes, big-endian payload length). Frames are
not lines: a line can span frames, a frame can hold many lines, and a multi-byte UTF-8 character
can straddle two frames. The demuxer therefore works on chunks as they arrive, hands each payload
slice to the sink of its stream, and the sink decodes incrementally and emits only whole lines.
No step here loops over bytes or lines in Python; memory stays bounded by the chunk size plus
one unfinished line.
"""

from __future__ import annotations

import codecs
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import IO, Protocol

__all__ = ["TAIL_LINES", "FrameDemuxer", "LineSink", "StreamTarget", "full_tail", "output_tail"]

STDOUT = 1
STDERR = 2

_HEADER_SIZE = 8
# A line longer than this is emitted in pieces rather than held in memory whole.
_MAX_PENDING_CHARS = 1 << 20
# How much of the most recent output each sink keeps for error messages.
_TAIL_CHARS = 16 * 1024
# How many lines an error message quotes.
TAIL_LINES = 20


class StreamTarget(Protocol):
    """Where a sink's complete lines go: a text stream or a log file."""

    def write(self, text: str) -> object: ...

    def flush(self) -> object: ...


class ProcessStream:
    """Writes to ``sys.stdout`` / ``sys.stderr`` as they are *at write time*.

    Dagster and pytest both swap these objects while a step runs; resolving late sends the
    container's output wherever the orchestrator's own output is going right now.
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def write(self, text: str) -> object:
        stream: IO[str] = getattr(sys, self._name)
        return stream.write(text)

    def flush(self) -> object:
        stream: IO[str] = getattr(sys, self._name)
        return stream.flush()


class LineSink:
    """Turns the byte payloads of one stream into whole lines of text for its targets.

    Invalid UTF-8 is replaced rather than raised on. A final line without a newline is emitted
    (with one) at :meth:`close`. The sink keeps the tail of what it emitted so that an error can
    quote the last lines.
    """

    def __init__(self, targets: Iterable[StreamTarget] = ()) -> None:
        self._targets = list(targets)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._tail = ""
        self._lock = threading.Lock()

    def write(self, data: bytes | memoryview) -> None:
        text = self._decoder.decode(data)
        if not text:
            return
        pending = self._pending + text
        cut = pending.rfind("\n") + 1
        if cut:
            self._pending = pending[cut:]
            self._emit(pending[:cut])
        elif len(pending) > _MAX_PENDING_CHARS:
            self._pending = ""
            self._emit(pending)
        else:
            self._pending = pending

    def close(self) -> None:
        """Flush the decoder and emit a last line that had no newline."""
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if rest:
            self._emit(rest if rest.endswith("\n") else rest + "\n")

    def tail_lines(self, count: int) -> list[str]:
        """The last ``count`` lines emitted, without their newlines."""
        lines = (self._tail + self._pending).splitlines()
        if len(self._tail) >= _TAIL_CHARS and lines:
            lines = lines[1:]  # the first one is probably cut short
        return lines[-count:]

    def _emit(self, text: str) -> None:
        self._tail = (self._tail + text)[-_TAIL_CHARS:]
        with self._lock:
            for target in self._targets:
                target.write(text)
                target.flush()


class _Writable(Protocol):
    def write(self, data: bytes | memoryview) -> None: ...


class FrameDemuxer:
    """Splits a multiplexed attach stream into payloads for the sink of each stream id.

    Feed it chunks of any size with :meth:`feed`; header bytes and payloads may be cut anywhere.
    Payloads of stream ids without a sink (stdin echo, say) are dropped.
    """

    def __init__(self, sinks: Mapping[int, _Writable]) -> None:
        self._sinks = dict(sinks)
        self._header = bytearray()
        self._stream_id = 0
        self._remaining = 0

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        position, size = 0, len(view)
        while position < size:
            if self._remaining == 0:
                needed = _HEADER_SIZE - len(self._header)
                self._header += view[position : position + needed]
                position += needed
                if len(self._header) < _HEADER_SIZE:
                    return
                self._stream_id = self._header[0]
                self._remaining = int.from_bytes(self._header[4:8], "big")
                self._header.clear()
                continue
            take = min(self._remaining, size - position)
            sink = self._sinks.get(self._stream_id)
            if sink is not None:
                sink.write(view[position : position + take])
            position += take
            self._remaining -= take

    @property
    def mid_frame(self) -> bool:
        """Whether the stream so far ended inside a header or a payload."""
        return bool(self._header) or self._remaining > 0


class _HasTail(Protocol):
    def tail_lines(self, count: int) -> list[str]: ...


def output_tail(stdout: _HasTail, stderr: _HasTail, count: int) -> tuple[list[str], str]:
    """The last ``count`` lines of stderr, or of stdout when stderr is empty, and which it was."""
    tail = stderr.tail_lines(count)
    if tail:
        return tail, "stderr"
    return stdout.tail_lines(count), "stdout"


def full_tail(stdout: _HasTail, stderr: _HasTail, stream: str, shown: int) -> str | None:
    """All that is kept of ``stream`` (its last 16 KiB), for a note under an error that quoted
    only its last ``shown`` lines; ``None`` when the error showed it all."""
    sink = stderr if stream == "stderr" else stdout
    lines = sink.tail_lines(1 << 30)
    if len(lines) <= shown:
        return None
    return "\n".join([f"The {stream} kept ({len(lines)} lines, its last 16 KiB):", *lines])
