"""The Pipes message stream parser: one message per complete line; a bad line costs no other."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from pipes_docker.messages import MessageLineParser


def message(method: str = "log", **params: Any) -> dict[str, Any]:
    return {"__dagster_pipes_version": "0.1", "method": method, "params": params}


def line(msg: Mapping[str, Any]) -> bytes:
    return orjson.dumps(msg) + b"\n"


class Collector:
    def __init__(self) -> None:
        self.messages: list[Mapping[str, Any]] = []
        self.problems: list[str] = []
        self.parser = MessageLineParser(self.messages.append, self.problems.append)


FIRST = message("opened", extras={})
SECOND = message("log", message="h\u00e9llo\nworld", level="info")
STREAM = line(FIRST) + line(SECOND)


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_message_cut_anywhere_is_parsed_once_when_complete(cut: int) -> None:
    c = Collector()

    c.parser.feed(STREAM[:cut])
    c.parser.feed(STREAM[cut:])

    assert c.messages == [FIRST, SECOND]
    assert c.problems == []


def test_stream_fed_byte_by_byte_is_parsed() -> None:
    c = Collector()

    for i in range(len(STREAM)):
        c.parser.feed(STREAM[i : i + 1])

    assert c.messages == [FIRST, SECOND]


def test_half_written_line_is_not_parsed_until_its_newline() -> None:
    c = Collector()
    whole = line(SECOND)

    c.parser.feed(whole[:-1])
    assert c.messages == []
    assert c.problems == []

    c.parser.feed(b"\n")
    assert c.messages == [SECOND]


def test_malformed_line_is_reported_with_its_line_number_and_neighbours_arrive() -> None:
    c = Collector()

    c.parser.feed(line(FIRST) + b'{"__dagster_pipes_version": "0.1", "meth\n' + line(SECOND))

    assert c.messages == [FIRST, SECOND]
    assert len(c.problems) == 1
    assert "line 2" in c.problems[0]
    assert "not valid JSON" in c.problems[0]
    assert "meth" in c.problems[0]  # quotes the start of the line


@pytest.mark.parametrize(
    "payload",
    [b'{"hello": "world"}', b"[1, 2, 3]", b'"a string"', b'{"__dagster_pipes_version": "0.1"}'],
)
def test_json_that_is_not_a_pipes_message_is_reported_and_skipped(payload: bytes) -> None:
    c = Collector()

    c.parser.feed(payload + b"\n" + line(FIRST))

    assert c.messages == [FIRST]
    assert len(c.problems) == 1
    assert "line 1" in c.problems[0]
    assert "not a Pipes message" in c.problems[0]


def test_unknown_method_is_reported_and_skipped() -> None:
    c = Collector()

    c.parser.feed(line(message("teleport")) + line(FIRST))

    assert c.messages == [FIRST]
    assert len(c.problems) == 1
    assert "'teleport'" in c.problems[0]
    assert "line 1" in c.problems[0]


def test_handler_error_is_reported_and_later_messages_still_arrive() -> None:
    problems: list[str] = []
    delivered: list[Mapping[str, Any]] = []

    def handle(msg: Mapping[str, Any]) -> None:
        if msg["method"] == "opened":
            raise KeyError("extras")
        delivered.append(msg)

    parser = MessageLineParser(handle, problems.append)
    parser.feed(line(FIRST) + line(SECOND))

    assert delivered == [SECOND]
    assert len(problems) == 1
    assert "'opened'" in problems[0]
    assert "KeyError" in problems[0]
    assert parser.messages_handled == 1


def test_trailing_partial_line_is_reported_on_finish() -> None:
    c = Collector()

    c.parser.feed(line(FIRST) + line(SECOND)[:25])
    c.parser.finish()

    assert c.messages == [FIRST]
    assert len(c.problems) == 1
    assert "line 2" in c.problems[0]
    assert "without a newline" in c.problems[0]


def test_finish_after_complete_lines_reports_nothing() -> None:
    c = Collector()

    c.parser.feed(STREAM)
    c.parser.finish()

    assert c.problems == []


def test_blank_lines_are_ignored() -> None:
    c = Collector()

    c.parser.feed(b"\n\n   \n" + line(FIRST) + b"\r\n\n" + line(SECOND) + b"\n")
    c.parser.finish()

    assert c.messages == [FIRST, SECOND]
    assert c.problems == []


def test_crlf_line_endings_are_accepted() -> None:
    c = Collector()

    c.parser.feed(orjson.dumps(FIRST) + b"\r\n")

    assert c.messages == [FIRST]


def test_five_megabyte_message_round_trips() -> None:
    c = Collector()
    big = message("report_custom_message", payload="\u00e9x" * (5 * 1024 * 1024 // 3))
    data = line(big)
    assert len(data) > 5 * 1024 * 1024

    for start in range(0, len(data), 65536):
        c.parser.feed(data[start : start + 65536])

    assert c.messages == [big]
    assert c.problems == []
