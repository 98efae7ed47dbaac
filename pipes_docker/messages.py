"""Parse the Pipes message stream: newline-delimited JSON, one message per line.

The stream arrives in chunks that know nothing of lines. Only complete lines are parsed, so a
message still being written is never read half-way. A line that is not a Pipes message, or a
message the handler rejects, is reported through ``on_problem`` and skipped: one bad line must
never cost the messages after it.

:class:`MessageTap` does the same for a stream that carries messages *and* a program's own
output (a container's stderr when no shared filesystem is available): it picks out the lines that
are Pipes messages and passes everything else through, byte for byte, to the output's sink.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson

__all__ = [
    "KNOWN_METHODS",
    "MessageDispatcher",
    "MessageLineParser",
    "MessageTap",
    "decode_message",
]

PIPES_VERSION_KEY = "__dagster_pipes_version"

KNOWN_METHODS = frozenset(
    {
        "opened",
        "closed",
        "log",
        "report_asset_materialization",
        "report_asset_check",
        "report_custom_message",
        "log_external_stream",
    }
)

_PREVIEW_CHARS = 200

# How dagster-pipes' writer starts every message line (the version key comes first). Searching for
# it, rather than only looking at line starts, also finds a message written right after a user's
# unfinished line ("progress: " + message).
MESSAGE_START = b'{"' + PIPES_VERSION_KEY.encode() + b'"'
# A message line longer than this is not held in memory: it is skipped (or passed on as output).
MAX_MESSAGE_BYTES = 512 << 20
# Integers this long may not fit 64 bits; orjson would make them floats.
_LONG_DIGITS = re.compile(rb"\d{19}")


def decode_message(line: bytes | bytearray) -> tuple[Mapping[str, Any] | None, str | None]:
    """``(message, None)`` for a Pipes message line, else ``(None, why it is not one)``.

    orjson is fast but stricter than what dagster-pipes writes (Python's ``json.dumps``):
    ``NaN``/``Infinity``, lone surrogates, integers past 64 bits (which orjson would turn into
    floats). Such lines are decoded again with the standard library, so they arrive as written.
    """
    try:
        message = orjson.loads(line)
        if _LONG_DIGITS.search(line):
            message = json.loads(line)
    except orjson.JSONDecodeError as exc:
        try:
            message = json.loads(line)
        except ValueError:
            return None, f"is not valid JSON ({exc})"
    if not (
        isinstance(message, dict)
        and PIPES_VERSION_KEY in message
        and isinstance(message.get("method"), str)
    ):
        return None, (
            f"is JSON but not a Pipes message (it needs '{PIPES_VERSION_KEY}' and 'method')"
        )
    return message, None


class MessageDispatcher:
    """Hands decoded messages to ``on_message``; unknown methods and rejections are problems.

    Args:
        on_message: Called with each message, in order.
        on_problem: Called with a human-readable description of each message that was skipped.
    """

    def __init__(
        self,
        on_message: Callable[[Mapping[str, Any]], None],
        on_problem: Callable[[str], None],
    ) -> None:
        self._on_message = on_message
        self._on_problem = on_problem
        self.messages_handled = 0

    def dispatch(self, message: Mapping[str, Any], where: str) -> None:
        method = message["method"]
        if method not in KNOWN_METHODS:
            self._on_problem(
                f"{where} has unknown method {method!r}; skipped it."
                " Is the container's dagster-pipes newer than the orchestrator's?"
            )
            return
        try:
            self._on_message(message)
        except Exception as exc:
            self._on_problem(
                f"message {method!r} on {where} was rejected by the Pipes handler"
                f" ({type(exc).__name__}: {exc}); skipped it."
            )
            return
        self.messages_handled += 1


class MessageLineParser:
    """Splits chunks into lines and hands each well-formed Pipes message to ``on_message``.

    Args:
        on_message: Called with each decoded message, in order.
        on_problem: Called with a human-readable description of each line that was skipped.
    """

    def __init__(
        self,
        on_message: Callable[[Mapping[str, Any]], None],
        on_problem: Callable[[str], None],
    ) -> None:
        self._dispatcher = MessageDispatcher(on_message, on_problem)
        self._on_problem = on_problem
        self._partial = bytearray()
        self._skipping = False  # inside a line past the cap, until its newline
        self.line_number = 0

    @property
    def messages_handled(self) -> int:
        return self._dispatcher.messages_handled

    def feed(self, chunk: bytes) -> None:
        if self._skipping:
            end = chunk.find(b"\n")
            if end < 0:
                return
            self._skipping = False
            chunk = chunk[end + 1 :]
        if b"\n" not in chunk:
            self._partial += chunk
            self._check_size()
            return
        lines = chunk.split(b"\n")
        if self._partial:
            self._partial += lines[0]
            lines[0] = self._partial  # type: ignore[call-overload]
            self._partial = bytearray()
        self._partial += lines.pop()
        for line in lines:
            self._handle_line(line)
        self._check_size()

    def _check_size(self) -> None:
        """Give up on a line past the cap: skip it to its newline instead of holding it."""
        if len(self._partial) <= MAX_MESSAGE_BYTES:
            return
        self.line_number += 1
        self._on_problem(
            f"line {self.line_number} of the message stream is longer than"
            f" {MAX_MESSAGE_BYTES >> 20} MiB; skipped it. It starts with:"
            f" {_preview(bytes(self._partial[:_PREVIEW_CHARS]))}"
        )
        self._partial = bytearray()
        self._skipping = True

    def finish(self) -> None:
        """Report a last line that never got its newline: its writer died mid-message."""
        if self._partial.strip():
            self.line_number += 1
            self._on_problem(
                f"line {self.line_number} of the message stream ends without a newline"
                f" ({len(self._partial)} bytes): the process probably died while writing it;"
                f" it was not parsed. Starts with: {_preview(bytes(self._partial))}"
            )
        self._partial.clear()

    def _handle_line(self, line: bytes | bytearray) -> None:
        self.line_number += 1
        if not line.strip():
            return
        message, problem = decode_message(line)
        if message is None:
            self._on_problem(
                f"line {self.line_number} of the message stream {problem}; skipped it."
                f" It starts with: {_preview(line)}"
            )
            return
        self._dispatcher.dispatch(message, f"line {self.line_number} of the message stream")


class ByteSink(Protocol):
    """Where a tap sends the output that is not a message."""

    def write(self, data: bytes | memoryview) -> None: ...

    def close(self) -> None: ...

    def tail_lines(self, count: int) -> list[str]: ...


class MessageTap:
    """Splits one output stream into Pipes messages and the program's own output.

    A line is taken as a message when it holds dagster-pipes' message start and, from there to
    the newline, decodes as a Pipes message; whatever came before the start on that line stays
    output. Every other byte goes to ``output`` unchanged, in order, as it arrives: a user's
    JSON line, a 100 KB line or invalid UTF-8 stays output. Only a line that looks like a
    message is held in memory until its newline (up to ``MAX_MESSAGE_BYTES``).

    Feed it chunks with :meth:`write` and end it with :meth:`close`; both run on one thread.

    Args:
        output: Receives everything that is not a message.
        dispatcher: Receives each message, in order.
        on_problem: Called with a description of each message-like line that was not one.
        stream: The stream's name, for problem descriptions.
    """

    def __init__(
        self,
        output: ByteSink,
        dispatcher: MessageDispatcher,
        on_problem: Callable[[str], None],
        *,
        stream: str,
    ) -> None:
        self._output = output
        self._dispatcher = dispatcher
        self._on_problem = on_problem
        self._stream = stream
        self._carry = b""  # output bytes held back: they may begin a message start
        self._message: bytearray | None = None  # a message-like line being collected

    def write(self, data: bytes | memoryview) -> None:
        data = self._carry + bytes(data) if self._carry else bytes(data)
        self._carry = b""
        view = memoryview(data)
        position, size = 0, len(data)
        while position < size:
            if self._message is not None:
                position = self._collect(data, position)
                continue
            start = data.find(MESSAGE_START, position)
            if start < 0:
                # Hold back a tail that could be the first bytes of a start cut by the chunking.
                line_start = max(data.rfind(b"\n", position) + 1, position)
                cut = size - min(len(MESSAGE_START) - 1, size - line_start)
                if cut > position:
                    self._output.write(view[position:cut])
                self._carry = data[cut:]
                return
            if start > position:
                self._output.write(view[position:start])
            end = data.find(b"\n", start)
            if end < 0:
                self._message = bytearray(view[start:])
                self._check_size()
                return
            self._end_line(data[start:end], newline=b"\n")
            position = end + 1

    def close(self) -> None:
        if self._message is not None:
            # The writer ended without a newline: a message that decodes still counts.
            self._end_line(bytes(self._message), newline=b"")
        elif self._carry:
            self._output.write(self._carry)
        self._carry = b""
        self._output.close()

    def tail_lines(self, count: int) -> list[str]:
        return self._output.tail_lines(count)

    def _collect(self, data: bytes, position: int) -> int:
        """Add to the message-like line; at its newline decide what it was."""
        assert self._message is not None
        end = data.find(b"\n", position)
        if end < 0:
            self._message += memoryview(data)[position:]
            self._check_size()
            return len(data)
        self._message += memoryview(data)[position:end]
        line, self._message = bytes(self._message), None
        self._end_line(line, newline=b"\n")
        return end + 1

    def _check_size(self) -> None:
        if self._message is not None and len(self._message) > MAX_MESSAGE_BYTES:
            self._on_problem(
                f"a line on {self._stream} that starts like a Pipes message is longer than"
                f" {MAX_MESSAGE_BYTES >> 20} MiB; passed it on as output."
            )
            self._output.write(bytes(self._message))
            self._message = None

    def _end_line(self, line: bytes, *, newline: bytes) -> None:
        self._message = None
        message, problem = decode_message(line)
        if message is not None:
            self._dispatcher.dispatch(message, f"a message line on {self._stream}")
            return
        if problem and problem.startswith("is not valid JSON"):
            self._on_problem(
                f"a line on {self._stream} starts like a Pipes message but {problem};"
                f" passed it on as output. It starts with: {_preview(line)}"
            )
        self._output.write(line + newline)


def _preview(line: bytes | bytearray) -> str:
    text = line[:_PREVIEW_CHARS].decode("utf-8", errors="replace")
    return repr(text) + ("..." if len(line) > _PREVIEW_CHARS else "")
