"""What every pipes-docker client is to Dagster: a Pipes client and a resource, in front of one
:class:`~pipes_docker.pipeline.RunPipeline`.

:class:`~pipes_docker.PipesDockerClient` and :class:`~pipes_docker.PipesDockerSwarmClient`
differ only in their backend and its own settings; the settings and run arguments they share
are declared once here (:class:`ClientSettings`, :class:`RunArguments`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict, TypeVar, Unpack

from dagster import (
    AssetExecutionContext,
    OpExecutionContext,
    PipesClient,
    PipesClientCompletedInvocation,
    PipesContextInjector,
    PipesMessageReader,
)
from dagster._core.definitions.resource_annotation import TreatAsResourceParam
from dagster_pipes import PipesExtras

from pipes_docker.backend import Backend
from pipes_docker.channels import PipesDockerChannel, choose_channel
from pipes_docker.errors import PipesDockerConfigError
from pipes_docker.ownership import sweep
from pipes_docker.pipeline import RunPipeline, RunSettings

if TYPE_CHECKING:  # imported by the runs that use them (see pipes_docker.pipeline)
    from pipes_docker.retrieve import PipesDockerCopyOut
    from pipes_docker.rules import PipesDockerOutputRule

__all__ = ["ClientSettings", "PipesDockerClientBase", "RunArguments", "one_engine"]

_E = TypeVar("_E")


class ClientSettings(TypedDict, total=False):
    """Settings every client takes, by keyword.

    Attributes:
        forward_stdio: Whether to forward the job's stdout/stderr to the orchestrator's (where
            Dagster captures them as compute logs). Default ``True``.
        log_dir: When set, each run keeps its job's output in
            ``{log_dir}/{run name}/stdout.log`` and ``stderr.log``.
        forward_termination: When the run is interrupted (Dagster terminates it, or the
            orchestrator gets SIGTERM/SIGINT) or times out, whether the job gets SIGTERM and
            ``termination_timeout_seconds`` to exit before SIGKILL. When ``False`` it is stopped
            with no grace period: the engine still sends SIGTERM first, then SIGKILL at once, so
            a SIGTERM handler may start but is not waited for. Either way its output so far is
            read and it is removed. Default ``True``.
        termination_timeout_seconds: The grace period between SIGTERM and SIGKILL. Default 20.
        channel: How context and messages travel (a :class:`PipesDockerChannel`).
        reattach: When a step runs again for the same run lineage (a step retry, a resumed run
            worker, a re-execution from failure) and the job an earlier attempt launched still
            runs or ended well, adopt it instead of launching another, reading its messages
            again from its start. One that failed is removed and the job runs afresh. Default
            ``True``.
        output_rules: :class:`PipesDockerOutputRule` values applied to every run's output lines
            (log levels, metadata, check results from a job that does not speak Pipes); a run's
            own ``output_rules`` are added to them. A bad pattern fails here.
    """

    forward_stdio: bool
    log_dir: str | None
    forward_termination: bool
    termination_timeout_seconds: float
    channel: PipesDockerChannel | None
    reattach: bool
    output_rules: Sequence[PipesDockerOutputRule] | None


class RunArguments(TypedDict, total=False):
    """Arguments every client's ``run()`` takes, by keyword, besides ``context``, ``image`` and
    the backend's own keywords.

    Attributes:
        command: The command, overriding the image's ``CMD`` (a string is split, a list is
            passed as is).
        env: Environment variables for this run, over the client's ``env`` (a
            ``dagster.EnvVar`` value is read when the run starts).
        extras: Extra values for the job's Pipes context.
        timeout_seconds: Stop the job and fail if it runs longer than this.
        inject_pipes: Make ``import dagster_pipes`` work in any image with Python 3, without
            rebuilding it: the orchestrator's installed dagster-pipes is copied into the job
            before it starts and put first on its ``PYTHONPATH`` (the image's or the user's is
            kept after it), so both sides speak the same protocol.
        inject_reporter: Let a job with no Python report from the shell: the ``dagster-pipes``
            command (a POSIX ``sh`` program, see ``dagster-pipes --help``) and this run's
            context are copied into the job, and the command's directory is put first on its
            ``PATH``. Needs only ``sh``, ``sed``, ``od`` and ``tr`` (dash and coreutils, or
            BusyBox).
        output_rules: :class:`PipesDockerOutputRule` values for this run, after the client's:
            matching output lines are logged at a level, or their named groups become
            materialization metadata or an asset check result (in ``get_results()``). The lines
            still reach stdout/stderr and the log files unchanged.
        copy_out: Paths to copy out of the job after it ends, before it is removed
            (:class:`PipesDockerCopyOut`); each file's path, size and sha256 are in the run's
            metadata (``pipes_docker/files``).
        registry: Credentials for this run's pull (``{"url", "username", "password"}``),
            instead of the client's. Never logged.
    """

    command: str | Sequence[str] | None
    env: Mapping[str, str] | None
    extras: PipesExtras | None
    timeout_seconds: float | None
    inject_pipes: bool
    inject_reporter: bool
    output_rules: Sequence[PipesDockerOutputRule] | None
    copy_out: PipesDockerCopyOut | None
    registry: Mapping[str, str] | None


class PipesDockerClientBase(PipesClient, TreatAsResourceParam):
    """The Pipes client and resource both clients are; subclasses give the backend."""

    # Names the client's launches in Dagster's event log (reattach).
    client_name: ClassVar[str]
    default_channel: ClassVar[type[PipesDockerChannel]]

    def __init__(
        self,
        backend: Backend,
        env: Mapping[str, str] | None,
        options: Mapping[str, Any] | None,
        context_injector: PipesContextInjector | None,
        message_reader: PipesMessageReader | None,
        /,
        **settings: Unpack[ClientSettings],
    ) -> None:
        _refuse_unknown(type(self).__name__, settings, ClientSettings)
        self._pipeline = RunPipeline(
            backend,
            choose_channel(
                channel=settings.get("channel"),
                context_injector=context_injector,
                message_reader=message_reader,
                default=self.default_channel,
            ),
            RunSettings(
                env=dict(env or {}),
                options=dict(options or {}),
                forward_stdio=settings.get("forward_stdio", True),
                log_dir=settings.get("log_dir"),
                forward_termination=settings.get("forward_termination", True),
                termination_timeout_seconds=settings.get("termination_timeout_seconds", 20.0),
                reattach=settings.get("reattach", True),
                output_rules=settings.get("output_rules") or (),
            ),
            client_name=self.client_name,
        )

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

    def _run(
        self,
        context: OpExecutionContext | AssetExecutionContext,
        image: str,
        options: Mapping[str, Any] | None,
        arguments: RunArguments,
    ) -> PipesClientCompletedInvocation:
        _refuse_unknown(f"{type(self).__name__}.run", arguments, RunArguments)
        return self._pipeline.run(context=context, image=image, options=options, **arguments)

    def remove_orphans(self, *, older_than: timedelta = timedelta(hours=6)) -> list[str]:
        """Remove what a crashed or killed orchestrator left behind: containers, or Swarm
        services and their configs.

        A run removes what it made; what is still there was orphaned when its orchestrator died
        without cleaning up (SIGKILL, a lost machine). Anything labelled
        ``io.pipes-docker.managed=true`` is removed, running or not, when:

        * the orchestrator that made it ran on this host, in this PID namespace, and its
          process is gone, or
        * it was made more than ``older_than`` ago (for orchestrators on other hosts).

        What live runs on this host made is left alone whatever its age unless ``older_than``
        says otherwise, and so is a job a live orchestrator adopted (reattach).
        ``older_than=timedelta(0)`` removes everything of ours. ``pipes-docker sweep``
        (``python -m pipes_docker sweep``) does the same from a shell, with a dry run, and also
        removes the orphaned runs' temp dirs on this host.

        Returns:
            The ids of what was removed.
        """
        return sweep(self._pipeline.backend, older_than=older_than)


def one_engine(engine: _E | None, docker_client: object, make: Callable[[], _E]) -> _E:
    """The engine seam given (tests), else one made with docker-py; never both."""
    if engine is not None and docker_client is not None:
        raise PipesDockerConfigError("Pass docker_client or engine, not both.")
    return engine if engine is not None else make()


def _refuse_unknown(where: str, given: Mapping[str, object], known: type) -> None:
    unknown = sorted(set(given) - set(known.__annotations__))
    if unknown:
        raise TypeError(f"{where}() got an unexpected keyword argument {unknown[0]!r}")
