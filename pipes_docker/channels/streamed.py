"""The streamed channel: no shared filesystem needed, only the Docker API.

* **Context in.** A small context travels inline in ``DAGSTER_PIPES_CONTEXT`` (dagster-pipes'
  ``{"data": ...}`` params); one too large for an environment variable (the kernel caps each at
  128 KiB) is copied into the created container as a file before it starts (``put_archive``),
  and the params point at it. Either way the engine needs to see nothing of the orchestrator.
* **Messages out.** dagster-pipes' default writer prints one JSON line per message to the
  container's stderr (``{"stdio": "stderr"}``). The output pump's :class:`MessageTap` picks
  those lines out of the attach stream as they arrive; every other byte stays the user's output,
  forwarded and quoted in errors as before.

The attach stream carries bytes exactly as written, so a 5 MB message arrives as one line. The
tap is fed by whatever source delivers the container's output: an engine's logs API (where the
json-file driver splits lines at 16 KiB) works the same, because pieces are joined before lines
are cut.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, cast

import orjson
from dagster import PipesContextInjector, PipesMessageReader
from dagster_pipes import PipesContextData, PipesMessage, PipesParams, encode_param

from pipes_docker.backend import ContainerFile
from pipes_docker.channels.base import OpenChannel, PipesDockerChannel, ReattachedContextInjector
from pipes_docker.container.engine import ContainerEngine
from pipes_docker.messages import ByteSink, MessageDispatcher, MessageTap

if TYPE_CHECKING:
    from dagster._core.pipes.context import PipesMessageHandler

__all__ = [
    "PipesDockerArchiveContextInjector",
    "PipesDockerStdioMessageReader",
    "PipesDockerStreamedChannel",
]

DEFAULT_CONTEXT_PATH = "/dagster-pipes/context.json"
# Encoded bootstrap values up to this size travel inline; larger contexts are copied in as a file.
INLINE_CONTEXT_LIMIT = 32 * 1024


class PipesDockerArchiveContextInjector(PipesContextInjector):
    """Puts the context inline in the bootstrap env var, or in a file copied into the container.

    One instance per run: the file (if any) is kept until the container is created.

    Args:
        path: Where a large context is copied inside the container.
        inline_limit: Largest encoded context (bytes) that travels inline.
    """

    def __init__(
        self, *, path: str = DEFAULT_CONTEXT_PATH, inline_limit: int = INLINE_CONTEXT_LIMIT
    ) -> None:
        self._path = path
        self._inline_limit = inline_limit
        self._files: list[ContainerFile] = []

    @contextmanager
    def inject_context(self, context_data: PipesContextData) -> Iterator[PipesParams]:
        inline: PipesParams = {"data": context_data}
        if len(encode_param(inline)) <= self._inline_limit:
            yield inline
            return
        self._files = [ContainerFile(self._path, orjson.dumps(context_data))]
        try:
            yield {"path": self._path}
        finally:
            self._files = []

    def container_files(self) -> Sequence[ContainerFile]:
        """The files the container needs before it starts; empty for an inline context."""
        return list(self._files)

    def no_messages_debug_text(self) -> str:
        return (
            "The context was passed inline in DAGSTER_PIPES_CONTEXT, or, when large, copied into"
            f" the container at {self._path} before it started."
        )


class PipesDockerStdioMessageReader(PipesMessageReader):
    """Reads Pipes messages from the container's own output, as it arrives.

    The container's dagster-pipes writes each message as a line on stderr. :meth:`route_output`
    wraps the output sinks of the run so that the output pump hands this reader every line that
    is a message, and the rest on to the sinks. Messages are queued and handed to Dagster on a
    thread of their own: the pump must keep reading at the speed the container writes, because
    the engine gives a client only seconds after the container exits to take the rest of its
    output before it closes the stream. When the session closes, every queued message has been
    handled.

    One instance per run (made by the channel's ``open``).

    Args:
        warn: Called with a description of every message-like line that was not one.
    """

    def __init__(self, *, warn: Callable[[str], None]) -> None:
        self._warn = warn
        self._queue: queue.SimpleQueue[Mapping[str, Any] | None] = queue.SimpleQueue()
        self._dispatcher = MessageDispatcher(self._queue.put, self._problem)

    @contextmanager
    def read_messages(self, handler: PipesMessageHandler) -> Iterator[PipesParams]:
        thread = threading.Thread(
            target=self._hand_over, args=(handler,), name="pipes-docker-messages", daemon=True
        )
        thread.start()
        try:
            yield {"stdio": "stderr"}
        finally:
            self._queue.put(None)  # the pump has finished: nothing comes after this
            thread.join()

    def route_output(self, stdout: ByteSink, stderr: ByteSink) -> tuple[ByteSink, ByteSink]:
        # stdout too: with tty=True the engine merges stderr into it.
        return (
            MessageTap(stdout, self._dispatcher, self._problem, stream="stdout"),
            MessageTap(stderr, self._dispatcher, self._problem, stream="stderr"),
        )

    def _hand_over(self, handler: PipesMessageHandler) -> None:
        while (message := self._queue.get()) is not None:
            try:
                handler.handle_message(cast(PipesMessage, message))
            except Exception as exc:
                self._problem(
                    f"message {message.get('method')!r} was rejected by the Pipes handler"
                    f" ({type(exc).__name__}: {exc}); skipped it."
                )

    def _problem(self, description: str) -> None:
        self._warn(f"[pipes-docker] {description}")

    @property
    def messages_handled(self) -> int:
        return self._dispatcher.messages_handled

    @property
    def expected_writer_count(self) -> int:
        # The base property is a dagster "preview" API that warns on every access.
        return 1

    def no_messages_debug_text(self) -> str:
        return (
            "Messages are read from the container's stderr, where dagster-pipes' default writer"
            " prints them (DAGSTER_PIPES_MESSAGES asks for that). None arrived: the container's"
            " process must call `open_dagster_pipes()` and keep the DAGSTER_PIPES_* environment"
            " variables pipes-docker set. If the image runs a program that does not speak Pipes,"
            " this is expected."
        )


class PipesDockerStreamedChannel(PipesDockerChannel):
    """Context in through the API, messages out through the container's output.

    Works on any engine: remote (tcp, ssh, TLS), Podman, or the host's engine seen from a
    container. Slower than the mounted channel only by what the output carries.

    Args:
        context_path: Where a context too large for an env var is copied in the container.
        inline_context_limit: Largest encoded context, in bytes, passed inline.
    """

    transport = "streamed"

    def __init__(
        self,
        *,
        context_path: str = DEFAULT_CONTEXT_PATH,
        inline_context_limit: int = INLINE_CONTEXT_LIMIT,
    ) -> None:
        self._context_path = context_path
        self._inline_limit = inline_context_limit

    @contextmanager
    def open(
        self, *, engine: ContainerEngine, image: str, warn: Callable[[str], None]
    ) -> Iterator[OpenChannel]:
        with self.open_unchecked(warn=warn, reason="chosen explicitly") as opened:
            yield opened

    def open_without_engine(
        self, *, warn: Callable[[str], None], reason: str
    ) -> AbstractContextManager[OpenChannel]:
        return self.open_unchecked(warn=warn, reason=reason)

    @contextmanager
    def open_unchecked(self, *, warn: Callable[[str], None], reason: str) -> Iterator[OpenChannel]:
        injector = self.context_injector()
        reader = PipesDockerStdioMessageReader(warn=warn)
        yield OpenChannel(
            transport=self.transport,
            description=f"context through the API, messages on the container's stderr: {reason}",
            context_injector=injector,
            message_reader=reader,
            container_files=injector.container_files,
            route_output=reader.route_output,
            launch_record={"transport": self.transport},
            # Messages travel in the output: a reattach can only re-read them from the logs.
            keep_output=True,
        )

    def reopen(
        self, record: Mapping[str, str], *, warn: Callable[[str], None]
    ) -> AbstractContextManager[OpenChannel] | None:
        if record.get("transport") != self.transport:
            return None
        return self._reopened(warn)

    @contextmanager
    def _reopened(self, warn: Callable[[str], None]) -> Iterator[OpenChannel]:
        reader = PipesDockerStdioMessageReader(warn=warn)
        yield OpenChannel(
            transport=self.transport,
            description="reattached: messages re-read from the container's logs from the start",
            context_injector=ReattachedContextInjector(),
            message_reader=reader,
            route_output=reader.route_output,
        )

    def context_injector(self) -> PipesDockerArchiveContextInjector:
        return PipesDockerArchiveContextInjector(
            path=self._context_path, inline_limit=self._inline_limit
        )
