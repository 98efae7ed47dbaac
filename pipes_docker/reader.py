"""A Pipes message reader that tails a file the container appends to through a bind mount."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from dagster import PipesMessageReader
from dagster_pipes import PipesMessage, PipesParams

from pipes_docker.errors import PipesDockerOutputError
from pipes_docker.messages import MessageLineParser

if TYPE_CHECKING:
    from dagster._core.pipes.context import PipesMessageHandler

__all__ = ["PipesDockerFileMessageReader"]

_CHUNK_SIZE = 1 << 20


class PipesDockerFileMessageReader(PipesMessageReader):
    """Reads Pipes messages from a file on the orchestrator's side of a bind mount.

    A background thread tails ``host_path`` while the container runs. When the session closes,
    the reader reads the file to its end before returning, so every message written before the
    container exited is handled. Lines are parsed only once complete; malformed lines and unknown
    methods are reported through ``warn`` and skipped, and later messages still arrive.

    Args:
        host_path: The messages file as the orchestrator sees it.
        container_path: The same file as the container sees it; passed in the bootstrap params.
        warn: Called with a description of every line that was skipped.
        poll_interval: Seconds to sleep when the file has no new data.
    """

    def __init__(
        self,
        host_path: str,
        container_path: str,
        *,
        warn: Callable[[str], None],
        poll_interval: float = 0.01,
    ) -> None:
        self._host_path = host_path
        self._container_path = container_path
        self._warn = warn
        self._poll_interval = poll_interval

    @contextmanager
    def read_messages(self, handler: PipesMessageHandler) -> Iterator[PipesParams]:
        stop = threading.Event()
        failures: list[BaseException] = []
        thread = threading.Thread(
            target=self._tail,
            args=(handler, stop, failures),
            name="pipes-docker-messages",
            daemon=True,
        )
        thread.start()
        try:
            yield {"path": self._container_path}
        finally:
            stop.set()
            thread.join()
        if failures:
            # A reader that died has lost every message after it: never pass that silently.
            raise PipesDockerOutputError(
                f"Reading Pipes messages from {self._host_path} failed:"
                f" {type(failures[0]).__name__}: {failures[0]}. Messages after that point were"
                " not delivered."
            ) from failures[0]

    def _tail(
        self, handler: PipesMessageHandler, stop: threading.Event, failures: list[BaseException]
    ) -> None:
        def deliver(message: Any) -> None:
            handler.handle_message(cast(PipesMessage, message))

        parser = MessageLineParser(deliver, self._problem)
        try:
            file = self._wait_for_file(stop)
            if file is None:
                return
            with file:
                while True:
                    # Read the flag before reading the file: once it is set and a read comes back
                    # empty, everything written before the container exited has been seen.
                    finishing = stop.is_set()
                    chunk = file.read(_CHUNK_SIZE)
                    if chunk:
                        parser.feed(chunk)
                    elif finishing:
                        break
                    else:
                        stop.wait(self._poll_interval)
            parser.finish()
        except BaseException as exc:
            failures.append(exc)

    def _wait_for_file(self, stop: threading.Event) -> Any:
        while True:
            finishing = stop.is_set()
            try:
                return open(self._host_path, "rb")
            except FileNotFoundError:
                if finishing:
                    return None
                stop.wait(self._poll_interval)

    def _problem(self, description: str) -> None:
        self._warn(f"[pipes-docker] {description}")

    @property
    def expected_writer_count(self) -> int:
        # One container writes one file. Overridden because the base property is a dagster
        # "preview" API that warns on every access.
        return 1

    def no_messages_debug_text(self) -> str:
        return (
            f"Messages are read from {self._host_path}, which the container sees as"
            f" {self._container_path}. Nothing was written there: the container's process must"
            " call `open_dagster_pipes()` (dagster-pipes' default loader and writer) and keep the"
            " DAGSTER_PIPES_* environment variables pipes-docker set. If the image runs a"
            " program that does not speak Pipes, this is expected."
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._host_path!r} -> {self._container_path!r})"
