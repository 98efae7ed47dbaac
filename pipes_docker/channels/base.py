"""The channel seam: how the Pipes context travels into a container and messages travel out.

A channel is opened once per run. It yields an :class:`OpenChannel`: the context injector and
message reader for dagster's ``open_pipes_session``, plus what the container needs for them to
work (bind mounts, files copied in before start) and, for channels that carry messages over the
container's own output, a way to pick them out of it. Closing it removes everything it made.

Channels hold configuration only (and caches of what is true per engine); everything of one run
lives in what :meth:`PipesDockerChannel.open` yields, so one channel serves concurrent runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import field

from dagster import PipesContextInjector, PipesMessageReader
from dagster_pipes import PipesContextData, PipesParams

from pipes_docker.backend import ContainerFile, Mount
from pipes_docker.container.engine import ContainerEngine
from pipes_docker.errors import PipesDockerChannelError
from pipes_docker.messages import ByteSink
from pipes_docker.values import frozen

__all__ = [
    "OpenChannel",
    "OutputRoute",
    "PipesDockerChannel",
    "ReattachedContextInjector",
    "Transport",
    "output_unchanged",
]

# Recorded in each run's metadata as ``pipes_docker/transport``.
Transport = str

OutputRoute = Callable[[ByteSink, ByteSink], tuple[ByteSink, ByteSink]]


class ReattachedContextInjector(PipesContextInjector):
    """For a container adopted after a restart: its context went in when it was launched."""

    @contextmanager
    def inject_context(self, context_data: PipesContextData) -> Iterator[PipesParams]:
        yield {}

    def no_messages_debug_text(self) -> str:
        return "The container was adopted after a restart; its context went in at its launch."


def _no_files() -> Sequence[ContainerFile]:
    return ()


def output_unchanged(stdout: ByteSink, stderr: ByteSink) -> tuple[ByteSink, ByteSink]:
    return stdout, stderr


@frozen
class OpenChannel:
    """What an open channel gives one run.

    Attributes:
        transport: A short name for how context and messages travel (``"mounted"``,
            ``"streamed"``, ``"custom"``), recorded in the run's metadata.
        description: One line on why and how, logged at debug level.
        context_injector: For ``open_pipes_session``.
        message_reader: For ``open_pipes_session``.
        mounts: Bind mounts the container needs.
        container_files: Files to copy into the container before it starts; asked for once the
            Pipes session is open (the context is known only then).
        route_output: Wraps the sinks of the container's stdout and stderr, for a channel whose
            messages travel in that output.
        launch_record: What :meth:`PipesDockerChannel.reopen` needs to read this run's messages
            again from another process (recorded with the launch); empty when it cannot.
        keep_output: Whether the engine must keep the container's output (a log driver that
            can replay it) for the messages to be read again after a reattach.
    """

    transport: Transport
    description: str
    context_injector: PipesContextInjector
    message_reader: PipesMessageReader
    mounts: Sequence[Mount] = ()
    container_files: Callable[[], Sequence[ContainerFile]] = _no_files
    route_output: OutputRoute = output_unchanged
    launch_record: Mapping[str, str] = field(default_factory=dict)
    keep_output: bool = False


class PipesDockerChannel(ABC):
    """Carries the Pipes context into a container and its messages out, for one run at a time."""

    @abstractmethod
    def open(
        self, *, engine: ContainerEngine, image: str, warn: Callable[[str], None]
    ) -> AbstractContextManager[OpenChannel]:
        """Prepare one run's context and message transport; tear it down on exit.

        Args:
            engine: The engine the run's container will run on.
            image: The run's image, present on the engine.
            warn: Where to report problems found in the message stream.

        Raises:
            PipesDockerChannelError: The channel cannot work with this engine.
        """

    def open_without_engine(
        self, *, warn: Callable[[str], None], reason: str
    ) -> AbstractContextManager[OpenChannel]:
        """Like :meth:`open`, for a run whose container no engine of ours will create.

        A Swarm service's task is created by whichever node the manager picks: nothing about
        that node can be probed, and it shares no filesystem with the orchestrator. Only a
        channel that needs neither can serve such a run.

        Raises:
            PipesDockerChannelError: This channel needs a container engine (a mounted dir).
        """
        raise PipesDockerChannelError(
            f"{type(self).__name__} cannot carry the Pipes context and messages here ({reason}):"
            " it needs a Docker engine that shares the orchestrator's filesystem. Use"
            " PipesDockerStreamedChannel, or your own context_injector/message_reader."
        )

    def reopen(
        self, record: Mapping[str, str], *, warn: Callable[[str], None]
    ) -> AbstractContextManager[OpenChannel] | None:
        """Read the messages of a container launched earlier (by a process now gone) again.

        ``record`` is the ``launch_record`` of that run's channel. Returns ``None`` when this
        channel cannot read them again; the caller then launches afresh.
        """
        return None
