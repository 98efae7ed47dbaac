"""PipesDockerClient: run a Dagster Pipes job in a Docker container."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import docker
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

from pipes_docker.channels import PipesDockerAutoChannel, PipesDockerChannel, choose_channel
from pipes_docker.container.backend import ContainerBackend
from pipes_docker.container.engine import ContainerEngine
from pipes_docker.dockerapi.containers import DockerEngine
from pipes_docker.errors import PipesDockerConfigError
from pipes_docker.images import PullPolicy, check_pull_policy
from pipes_docker.ownership import sweep
from pipes_docker.pipeline import RunPipeline, RunSettings
from pipes_docker.retrieve import PipesDockerCopyOut
from pipes_docker.rules import PipesDockerOutputRule, check_rules

__all__ = ["PipesDockerClient", "PullPolicy"]

# Names this client's launches in Dagster's event log (reattach).
CLIENT_NAME = "pipes_docker.PipesDockerClient"


class PipesDockerClient(PipesClient, TreatAsResourceParam):
    """A Pipes client that runs each job in its own Docker container.

    Context and messages travel through a per-run temp dir bind-mounted into the container when
    the engine sees the orchestrator's files, and through the Docker API and the container's
    stderr when it does not (a remote engine, or Dagster itself in a container); a probe decides
    once per engine. The container's stdout and stderr are forwarded line by line to the
    orchestrator's own stdout and stderr (where Dagster captures them as compute logs). The
    container and everything made for the run are removed after every run, whatever its outcome.

    Usable as a Dagster resource::

        @asset
        def my_asset(context: AssetExecutionContext, docker_pipes: PipesDockerClient):
            return docker_pipes.run(context=context, image="my-job:1").get_materialize_result()

        defs = Definitions(assets=[my_asset], resources={"docker_pipes": PipesDockerClient()})

    Args:
        docker_client: The docker-py client to use. By default one is made from the environment
            (``DOCKER_HOST`` or the local socket) on the first run and reused after.
        env: Environment variables for every run's container. A ``dagster.EnvVar`` value is
            read from the environment of the process that runs the step, when the run starts.
        forward_stdio: Whether to forward the container's stdout/stderr to the orchestrator's.
        container_kwargs: docker-py ``containers.create`` keywords for every run (``user``,
            ``mem_limit``, ``network_mode``, ...); a run's own ``container_kwargs`` win.
        pull_policy: ``"if_not_present"`` pulls a missing image, ``"always"`` pulls before every
            run, ``"never"`` fails at once when the image is missing.
        registry: Credentials for pulls: ``{"url", "username", "password"}`` (values may be
            ``dagster.EnvVar``); a run's own ``registry`` wins. Never logged.
        log_dir: When set, each run keeps its container's output in
            ``{log_dir}/{container name}/stdout.log`` and ``stderr.log``.
        forward_termination: When the run is interrupted (Dagster terminates it, or the
            orchestrator gets SIGTERM/SIGINT), whether the container gets SIGTERM and
            ``termination_timeout_seconds`` to exit before SIGKILL. When ``False`` it is
            stopped with no grace period: the engine still sends SIGTERM first, then SIGKILL at
            once, so a SIGTERM handler may start but is not waited for. Either way its output so
            far is read and it is removed.
        termination_timeout_seconds: How long a stopped container gets between SIGTERM and
            SIGKILL (also after ``timeout_seconds``).
        channel: How context and messages travel. Defaults to
            :class:`PipesDockerAutoChannel`: mounted where the engine shares our temp dir,
            streamed elsewhere. :class:`PipesDockerMountedChannel` and
            :class:`PipesDockerStreamedChannel` pick one explicitly.
        context_injector: A dagster ``PipesContextInjector`` of your own (instead of
            ``channel``); without a ``message_reader``, messages come over stderr.
        message_reader: A dagster ``PipesMessageReader`` of your own (instead of ``channel``);
            without a ``context_injector``, the context goes inline or is copied in.
        reattach: When a step runs again for the same run lineage (a step retry, a resumed
            run worker, a re-execution from failure) and the container an earlier attempt
            launched still exists, adopt it instead of launching another: read its messages
            (and, where the engine kept it, its output) from the start and wait for it. A
            container that failed is removed and the job runs afresh. On the streamed
            transport this keeps the container's output with the engine's log driver.
        output_rules: :class:`PipesDockerOutputRule` values applied to every run's output
            lines (log levels, metadata, check results from a job that does not speak Pipes);
            a run's own ``output_rules`` are added to them. A bad pattern fails here.
        engine: The engine seam; defaults to docker-py (``docker_client``). Meant for tests.
    """

    def __init__(
        self,
        # The first four may be positional, in dagster-docker's order, so its users' code runs.
        env: Mapping[str, str] | None = None,
        registry: Mapping[str, str] | None = None,
        context_injector: PipesContextInjector | None = None,
        message_reader: PipesMessageReader | None = None,
        *,
        docker_client: docker.DockerClient | None = None,
        forward_stdio: bool = True,
        container_kwargs: Mapping[str, Any] | None = None,
        pull_policy: PullPolicy = "if_not_present",
        log_dir: str | None = None,
        forward_termination: bool = True,
        termination_timeout_seconds: float = 20.0,
        channel: PipesDockerChannel | None = None,
        reattach: bool = True,
        output_rules: Sequence[PipesDockerOutputRule] | None = None,
        engine: ContainerEngine | None = None,
    ) -> None:
        if engine is not None and docker_client is not None:
            raise PipesDockerConfigError("Pass docker_client or engine, not both.")
        self._engine: ContainerEngine = engine or DockerEngine(docker_client)
        self._pipeline = RunPipeline(
            ContainerBackend(
                self._engine, pull_policy=check_pull_policy(pull_policy), registry=registry
            ),
            choose_channel(
                channel=channel,
                context_injector=context_injector,
                message_reader=message_reader,
                default=PipesDockerAutoChannel,
            ),
            RunSettings(
                env=dict(env or {}),
                options=dict(container_kwargs or {}),
                forward_stdio=forward_stdio,
                log_dir=log_dir,
                forward_termination=forward_termination,
                termination_timeout_seconds=termination_timeout_seconds,
                reattach=reattach,
                output_rules=check_rules(output_rules),
            ),
            client_name=CLIENT_NAME,
        )

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

    def run(  # type: ignore[override]
        self,
        *,
        context: OpExecutionContext | AssetExecutionContext,
        image: str,
        command: str | Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        extras: PipesExtras | None = None,
        container_kwargs: Mapping[str, Any] | None = None,
        timeout_seconds: float | None = None,
        inject_pipes: bool = False,
        inject_reporter: bool = False,
        output_rules: Sequence[PipesDockerOutputRule] | None = None,
        copy_out: PipesDockerCopyOut | None = None,
        registry: Mapping[str, str] | None = None,
    ) -> PipesClientCompletedInvocation:
        """Run ``image`` in a container as a Pipes session and wait for it to end.

        Args:
            context: The asset or op execution context.
            image: The image to run.
            command: The command, overriding the image's; a string is split by the engine's
                rules, a list is passed as is.
            env: Environment variables for this run, over the client's ``env``.
            extras: Extra values for the container's Pipes context.
            container_kwargs: docker-py ``containers.create`` keywords for this run, over the
                client's.
            timeout_seconds: Stop the container and fail if it runs longer than this.
            inject_pipes: Make ``import dagster_pipes`` work in any image with Python 3, without
                rebuilding it: the orchestrator's installed dagster-pipes is copied into the
                container before it starts and put first on its ``PYTHONPATH`` (ahead of the
                image's or the user's ``PYTHONPATH``, which is kept). The orchestrator's
                version therefore wins over a copy already in the image, so both sides speak
                the same protocol.
            inject_reporter: Let a job with no Python report from the shell: the
                ``dagster-pipes`` command (a POSIX ``sh`` program, see ``dagster-pipes --help``)
                and this run's context are copied into the job, and the command's directory is
                put first on its ``PATH``. Needs only ``sh``, ``sed``, ``od`` and ``tr`` (dash
                and coreutils, or BusyBox).
            registry: Credentials for this run's pull (``{"url", "username", "password"}``),
                instead of the client's ``registry``. Never logged.

            output_rules: :class:`PipesDockerOutputRule` values for this run, after the
                client's: matching output lines are logged at a level, or their named groups
                become materialization metadata or an asset check result (in ``get_results()``).
                The lines still reach stdout/stderr and the log files unchanged.
            copy_out: Paths to copy out of the container after the job ends, before it is
                removed (:class:`PipesDockerCopyOut`), through the Docker API; each file's
                path, size and sha256 are in the run's metadata (``pipes_docker/files``).

        Returns:
            The completed invocation: ``get_materialize_result()``, ``get_results()`` and
            ``get_custom_messages()`` as with dagster's own Pipes clients. Its metadata (image,
            image id, container id, exit code, duration) is attached to every result.

        Raises:
            PipesDockerContainerError: The container exited non-zero, was killed by a signal or
                by the OOM killer; the message quotes the last lines of its stderr.
            PipesDockerTimeoutError: It ran longer than ``timeout_seconds``.
            PipesDockerImageError: The image is missing or could not be pulled.
            PipesDockerLaunchError: The container could not be created or started.
            PipesDockerEngineError: The Docker engine could not be reached.
        """

        return self._pipeline.run(
            context=context,
            image=image,
            command=command,
            env=env,
            extras=extras,
            options=container_kwargs,
            timeout_seconds=timeout_seconds,
            inject_pipes=inject_pipes,
            inject_reporter=inject_reporter,
            output_rules=output_rules,
            copy_out=copy_out,
            registry=registry,
        )

    def remove_orphans(self, *, older_than: timedelta = timedelta(hours=6)) -> list[str]:
        """Remove containers of ours that a crashed or killed orchestrator left behind.

        A run removes its own container; one that is still there was orphaned when its
        orchestrator died without cleaning up (SIGKILL, a lost machine). A container labelled
        ``io.pipes-docker.managed=true`` is removed, running or not, when:

        * the orchestrator that made it ran on this host, in this PID namespace, and its
          process is gone, or
        * it was created more than ``older_than`` ago (for orchestrators on other hosts).

        Containers of live runs on this host are left alone whatever their age unless
        ``older_than`` says otherwise. ``older_than=timedelta(0)`` removes every container of ours.
        ``pipes-docker sweep`` (``python -m pipes_docker sweep``) does the same from a shell,
        with a dry run, and also removes the orphaned runs' temp dirs on this host.

        Returns:
            The ids of the containers removed.
        """

        return sweep(self._pipeline.backend, older_than=older_than)
