"""Parse the Pipes message stream: newline-delimited JSON, one message per line.

The stream arrives in chunks that know nothing of lines. Only complete lines are parsed, so a
message still being written is never read half-way. A line that is not a Pipes message, or a
message the handler rejects, is reported through ``on_problem`` and skipped: one bad line must
never cost the messages after it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

__all__ = ["KNOWN_METHODS", "MessageLineParser"]

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
        self._on_message = on_message
        self._on_problem = on_problem
        self._partial = bytearray()
        self.line_number = 0
        self.messages_handled = 0

    def feed(self, chunk: bytes) -> None:
        if b"\n" not in chunk:
            self._partial += chunk
            return
        lines = chunk.split(b"\n")
        if self._partial:
            self._partial += lines[0]
            lines[0] = bytes(self._partial)
            self._partial.clear()
        self._partial += lines.pop()
        for line in lines:
            self._handle_line(line)

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

    def _handle_line(self, line: bytes) -> None:
        self.line_number += 1
        if not line.strip():
            return
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            self._on_problem(
                f"line {self.line_number} of the message stream is not valid JSON ({exc});"
                f" skipped it. It starts with: {_preview(line)}"
            )
            return
        if not (
            isinstance(message, dict)
            and PIPES_VERSION_KEY in message
            and isinstance(message.get("method"), str)
        ):
            self._on_problem(
                f"line {self.line_number} of the message stream is JSON but not a Pipes message"
                f" (it needs '{PIPES_VERSION_KEY}' and 'method'); skipped it."
                f" It starts with: {_preview(line)}"
            )
            return
        method = message["method"]
        if method not in KNOWN_METHODS:
            self._on_problem(
                f"line {self.line_number} of the message stream has unknown method {method!r};"
                " skipped it. Is the container's dagster-pipes newer than the orchestrator's?"
            )
            return
        try:
            self._on_message(message)
        except Exception as exc:
            self._on_problem(
                f"message {method!r} on line {self.line_number} of the message stream was"
                f" rejected by the Pipes handler ({type(exc).__name__}: {exc}); skipped it."
            )
            return
        self.messages_handled += 1


def _preview(line: bytes) -> str:
    text = line[:_PREVIEW_CHARS].decode("utf-8", errors="replace")
    return repr(text) + ("..." if len(line) > _PREVIEW_CHARS else "")
