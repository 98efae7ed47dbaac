"""Bring your own channel: any dagster context injector and message reader.

Dagster's Pipes vocabulary has two halves on each side. The orchestrator's *context injector*
hands the context over and returns the params the container's *context loader* needs to fetch
it; the orchestrator's *message reader* collects what the container's *message writer* sends,
and returns the params that writer needs. Both sets of params reach the container through the
bootstrap env vars (the *params loader* reads them). pipes-docker's own channels are such pairs;
this one takes the user's, e.g. dagster's ``PipesFileContextInjector`` and
``PipesFileMessageReader`` on a volume the user mounts, or a blob-store reader whose writer
uploads chunks from inside the container.

A half that is not given is the streamed channel's: the context inline or copied in, messages
on stderr. The container's output is demultiplexed, forwarded and quoted in errors either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from dagster import PipesContextInjector, PipesMessageReader

from pipes_docker.channels.base import OpenChannel, PipesDockerChannel, output_unchanged
from pipes_docker.channels.streamed import PipesDockerStdioMessageReader, PipesDockerStreamedChannel
from pipes_docker.container.engine import ContainerEngine
from pipes_docker.errors import PipesDockerConfigError

__all__ = ["PipesDockerCustomChannel", "choose_channel"]


class PipesDockerCustomChannel(PipesDockerChannel):
    """Uses the given context injector and/or message reader for every run.

    Args:
        context_injector: Any ``PipesContextInjector``; the streamed one when ``None``.
        message_reader: Any ``PipesMessageReader``; the stderr reader when ``None``.
    """

    transport = "custom"

    def __init__(
        self,
        *,
        context_injector: PipesContextInjector | None = None,
        message_reader: PipesMessageReader | None = None,
    ) -> None:
        if context_injector is None and message_reader is None:
            raise PipesDockerConfigError("Pass a context_injector, a message_reader, or both.")
        self._context_injector = context_injector
        self._message_reader = message_reader
        self._streamed = PipesDockerStreamedChannel()

    def open(
        self, *, engine: ContainerEngine, image: str, warn: Callable[[str], None]
    ) -> AbstractContextManager[OpenChannel]:
        return self._open(warn)

    def open_without_engine(
        self, *, warn: Callable[[str], None], reason: str
    ) -> AbstractContextManager[OpenChannel]:
        return self._open(warn)

    @contextmanager
    def _open(self, warn: Callable[[str], None]) -> Iterator[OpenChannel]:
        streamed_injector = self._streamed.context_injector()
        injector = self._context_injector or streamed_injector
        if self._message_reader is not None:
            reader: PipesMessageReader = self._message_reader
            route = output_unchanged
        else:
            stdio_reader = PipesDockerStdioMessageReader(warn=warn)
            reader, route = stdio_reader, stdio_reader.route_output
        yield OpenChannel(
            transport=self.transport,
            description=f"{type(injector).__name__} and {type(reader).__name__}",
            context_injector=injector,
            message_reader=reader,
            container_files=streamed_injector.container_files,
            route_output=route,
        )


def choose_channel(
    *,
    channel: PipesDockerChannel | None,
    context_injector: PipesContextInjector | None,
    message_reader: PipesMessageReader | None,
    default: Callable[[], PipesDockerChannel],
) -> PipesDockerChannel:
    """A client's channel from its arguments: one channel, or the user's injector/reader pair.

    Raises:
        ValueError: Both a channel and an injector or reader were given.
    """
    if channel is not None and (context_injector or message_reader):
        raise PipesDockerConfigError("Pass channel, or context_injector/message_reader, not both.")
    if context_injector is not None or message_reader is not None:
        return PipesDockerCustomChannel(
            context_injector=context_injector, message_reader=message_reader
        )
    return channel or default()
