"""MessageTap: Pipes messages picked out of a stream that also carries the program's output."""

from __future__ import annotations

import io
import random
from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from pipes_docker.demux import LineSink
from pipes_docker.messages import MAX_MESSAGE_BYTES, MessageDispatcher, MessageTap


def message(method: str = "log", **params: Any) -> bytes:
    """A message line exactly as dagster-pipes' stdio writer prints it (json.dumps + newline)."""
    import json

    body = {"__dagster_pipes_version": "0.1", "method": method, "params": params}
    return json.dumps(body).encode() + b"\n"


class Tapped:
    def __init__(self) -> None:
        self.messages: list[Mapping[str, Any]] = []
        self.problems: list[str] = []
        self.out = io.StringIO()
        dispatcher = MessageDispatcher(self.messages.append, self.problems.append)
        self.tap = MessageTap(
            LineSink([self.out]), dispatcher, self.problems.append, stream="stderr"
        )

    def feed(self, data: bytes, *, seed: int = 0, max_chunk: int = 7) -> Tapped:
        """Feed ``data`` in random-sized chunks, so starts and newlines are cut anywhere."""
        rng = random.Random(seed)
        position = 0
        while position < len(data):
            size = rng.randint(1, max_chunk)
            self.tap.write(data[position : position + size])
            position += size
        self.tap.close()
        return self

    @property
    def output(self) -> str:
        return self.out.getvalue()


@pytest.mark.parametrize("seed", range(5))
def test_messages_leave_the_stream_and_output_stays_in_order(seed: int) -> None:
    data = (
        b"first line\n"
        + message(message="one")
        + b"second line\n"
        + message("report_custom_message", payload=[1, 2])
        + b"last line"
    )

    tapped = Tapped().feed(data, seed=seed)

    assert [m["method"] for m in tapped.messages] == ["log", "report_custom_message"]
    assert tapped.messages[1]["params"] == {"payload": [1, 2]}
    assert tapped.output == "first line\nsecond line\nlast line\n"
    assert tapped.problems == []


def test_a_users_json_lines_stay_output() -> None:
    user = [
        b'{"event": "row", "n": 1}\n',
        b'{"__dagster_pipes_version": "0.1"}\n',  # the key, but no method: not a message
        b'["__dagster_pipes_version"]\n',
    ]

    tapped = Tapped().feed(b"".join(user))

    assert tapped.messages == []
    assert tapped.output == b"".join(user).decode()
    assert tapped.problems == []


def test_long_output_lines_pass_through_whole() -> None:
    line = b"y" * 100_000 + b"\n"

    tapped = Tapped().feed(line * 3, max_chunk=65536)

    assert tapped.output == (line * 3).decode()
    assert tapped.messages == []


def test_a_5mb_message_arrives_intact() -> None:
    blob = "z" * 5_000_000

    tapped = Tapped().feed(b"before\n" + message(blob=blob) + b"after\n", max_chunk=65536)

    assert [m["params"]["blob"] for m in tapped.messages] == [blob]
    assert tapped.output == "before\nafter\n"


def test_a_message_after_an_unfinished_user_line_is_found_and_the_line_kept() -> None:
    tapped = Tapped().feed(b"progress: " + message(message="hi") + b"done\n")

    assert [m["params"] for m in tapped.messages] == [{"message": "hi"}]
    assert tapped.output == "progress: done\n"


def test_a_message_like_line_that_is_not_json_is_output_and_a_warning() -> None:
    broken = b'{"__dagster_pipes_version": "0.1", "method": "log", "par\n'

    tapped = Tapped().feed(broken + message(message="later"))

    assert tapped.output == broken.decode()
    assert [m["params"] for m in tapped.messages] == [{"message": "later"}]
    assert len(tapped.problems) == 1
    assert "not valid JSON" in tapped.problems[0]


def test_unknown_method_is_a_problem_not_output() -> None:
    tapped = Tapped().feed(message("teleport"))

    assert tapped.messages == []
    assert tapped.output == ""
    assert "unknown method 'teleport'" in tapped.problems[0]


def test_a_last_message_without_newline_still_counts() -> None:
    tapped = Tapped().feed(message(message="end").rstrip(b"\n"))

    assert [m["params"] for m in tapped.messages] == [{"message": "end"}]
    assert tapped.output == ""


def test_invalid_utf8_and_nul_bytes_pass_through() -> None:
    tapped = Tapped().feed(b"bad \xff\xfe and \x00 nul\n" + message())

    assert tapped.output == "bad \ufffd\ufffd and \x00 nul\n"
    assert len(tapped.messages) == 1


def test_a_line_longer_than_the_message_cap_is_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipes_docker.messages.MAX_MESSAGE_BYTES", 1000)
    assert MAX_MESSAGE_BYTES > 1000  # the real cap is generous

    tapped = Tapped().feed(b'{"__dagster_pipes_version"' + b"x" * 5000 + b"\nnext\n", max_chunk=512)

    assert tapped.messages == []
    assert tapped.output.startswith('{"__dagster_pipes_version"xxx')
    assert tapped.output.endswith("\nnext\n")
    assert "longer than" in tapped.problems[0]


def test_orjson_compact_messages_are_found_too() -> None:
    compact = orjson.dumps({"__dagster_pipes_version": "0.1", "method": "closed", "params": {}})

    tapped = Tapped().feed(compact + b"\n")

    assert [m["method"] for m in tapped.messages] == ["closed"]
