"""The file-tailing message reader: nothing the container wrote before it exited is lost."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipes_docker.errors import PipesDockerOutputError
from pipes_docker.reader import PipesDockerFileMessageReader

CONTAINER_PATH = "/dagster-pipes/messages"


class Handler:
    """Stands in for dagster's PipesMessageHandler."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.messages: list[Mapping[str, Any]] = []
        self.framework_errors: list[tuple[str, Any]] = []
        self._fail_on = fail_on

    def handle_message(self, message: Mapping[str, Any]) -> None:
        if message["method"] == self._fail_on:
            raise ValueError(f"cannot handle {self._fail_on}")
        self.messages.append(message)

    def report_pipes_framework_exception(self, origin: str, exc_info: Any) -> None:
        self.framework_errors.append((origin, exc_info))


def msg(i: int) -> dict[str, Any]:
    return {"__dagster_pipes_version": "0.1", "method": "log", "params": {"message": f"m{i}"}}


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as file:
        file.write(data)


def reader(path: Path, warnings: list[str]) -> PipesDockerFileMessageReader:
    return PipesDockerFileMessageReader(
        str(path), CONTAINER_PATH, warn=warnings.append, poll_interval=0.01
    )


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_bootstrap_params_name_the_container_path(tmp_path: Path) -> None:
    path = tmp_path / "messages"
    path.touch()

    with reader(path, []).read_messages(Handler()) as params:  # type: ignore[arg-type]
        assert params == {"path": CONTAINER_PATH}


def test_messages_appended_while_reading_are_delivered(tmp_path: Path) -> None:
    path = tmp_path / "messages"
    path.touch()
    handler = Handler()

    with reader(path, []).read_messages(handler):  # type: ignore[arg-type]
        append(path, orjson.dumps(msg(1)) + b"\n")
        assert eventually(lambda: len(handler.messages) == 1)
        append(path, orjson.dumps(msg(2)) + b"\n" + orjson.dumps(msg(3))[:10])
        assert eventually(lambda: len(handler.messages) == 2)
        append(path, orjson.dumps(msg(3))[10:] + b"\n")
        assert eventually(lambda: len(handler.messages) == 3)

    assert handler.messages == [msg(1), msg(2), msg(3)]


def test_everything_written_before_exit_is_delivered_by_exit(tmp_path: Path) -> None:
    path = tmp_path / "messages"
    path.touch()
    handler = Handler()
    batch = b"".join(orjson.dumps(msg(i)) + b"\n" for i in range(20_000))

    with reader(path, []).read_messages(handler):  # type: ignore[arg-type]
        append(path, batch)
        append(path, orjson.dumps(msg(20_000)) + b"\n")

    assert handler.messages == [msg(i) for i in range(20_001)]
    assert handler.framework_errors == []


def test_file_created_after_the_session_opened_is_read(tmp_path: Path) -> None:
    path = tmp_path / "messages"
    handler = Handler()

    with reader(path, []).read_messages(handler):  # type: ignore[arg-type]
        time.sleep(0.05)
        append(path, orjson.dumps(msg(1)) + b"\n")

    assert handler.messages == [msg(1)]


def test_file_never_created_ends_quietly(tmp_path: Path) -> None:
    handler = Handler()
    warnings: list[str] = []

    started = time.monotonic()
    with reader(tmp_path / "missing", warnings).read_messages(handler):  # type: ignore[arg-type]
        pass

    assert time.monotonic() - started < 2
    assert handler.messages == []
    assert handler.framework_errors == []
    assert warnings == []


def test_malformed_line_warns_and_later_messages_arrive(tmp_path: Path) -> None:
    path = tmp_path / "messages"
    path.touch()
    handler = Handler()
    warnings: list[str] = []

    with reader(path, warnings).read_messages(handler):  # type: ignore[arg-type]
        append(path, orjson.dumps(msg(1)) + b"\n{not json\n" + orjson.dumps(msg(2)) + b"\n")

    assert handler.messages == [msg(1), msg(2)]
    assert len(warnings) == 1
    assert warnings[0].startswith("[pipes-docker]")
    assert "line 2" in warnings[0]


def test_message_the_handler_rejects_warns_and_later_messages_arrive(tmp_path: Path) -> None:
    path = tmp_path / "messages"
    path.touch()
    handler = Handler(fail_on="opened")
    warnings: list[str] = []
    opened = {"__dagster_pipes_version": "0.1", "method": "opened", "params": {"extras": {}}}

    with reader(path, warnings).read_messages(handler):  # type: ignore[arg-type]
        append(path, orjson.dumps(opened) + b"\n" + orjson.dumps(msg(2)) + b"\n")

    assert handler.messages == [msg(2)]
    assert len(warnings) == 1
    assert "cannot handle opened" in warnings[0]


def test_unfinished_last_line_warns_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "messages"
    path.touch()
    handler = Handler()
    warnings: list[str] = []

    with reader(path, warnings).read_messages(handler):  # type: ignore[arg-type]
        append(path, orjson.dumps(msg(1)) + b"\n" + orjson.dumps(msg(2))[:12])

    assert handler.messages == [msg(1)]
    assert len(warnings) == 1
    assert "without a newline" in warnings[0]


def test_a_reader_that_dies_fails_the_session_with_its_cause(tmp_path: Path) -> None:
    path = tmp_path / "messages"
    path.mkdir()  # opening a directory for reading fails with IsADirectoryError
    handler = Handler()

    with (
        pytest.raises(PipesDockerOutputError, match="IsADirectoryError") as raised,
        reader(path, []).read_messages(handler),  # type: ignore[arg-type]
    ):
        pass

    assert isinstance(raised.value.__cause__, IsADirectoryError)


def test_debug_text_names_both_sides_of_the_mount(tmp_path: Path) -> None:
    path = tmp_path / "messages"

    text = reader(path, []).no_messages_debug_text()

    assert str(path) in text
    assert CONTAINER_PATH in text
    assert "open_dagster_pipes" in text


def test_expected_writer_count_is_one_without_a_preview_warning(tmp_path: Path) -> None:
    # filterwarnings=error turns dagster's preview warning into a failure here.
    assert reader(tmp_path / "messages", []).expected_writer_count == 1
