"""PipesDockerSwarmClient: run a Dagster Pipes job as a Docker Swarm job, on any node."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from dagster import (
    AssetExecutionContext,
    MetadataValue,
    OpExecutionContext,
    PipesClient,
    PipesClientCompletedInvocation,
    PipesContextInjector,
    PipesMessageReader,
    open_pipes_session,
)
from dagster._core.definitions.resource_annotation import TreatAsResourceParam
from dagster_pipes import PipesExtras

from pipes_docker.channels import (
    PipesDockerChannel,
    PipesDockerStreamedChannel,
    choose_channel,
)
from pipes_docker.demux import TAIL_LINES, output_tail
from pipes_docker.dockerapi.services import DockerSwarmEngine
from pipes_docker.errors import PipesDockerContainerError
from pipes_docker.interrupts import sigterm_unwinds
from pipes_docker.launcher import Removal, awaited_removals
from pipes_docker.session import (
    interrupt_logger,
    legacy_jobs_noted_at_info,
    log_paths,
    op_context,
    output_sinks,
)
from pipes_docker.spec import (
    MANAGED_LABEL,
    container_name,
    labels_for,
    orchestrator_gone,
)
from pipes_docker.swarm.engine import SwarmEngine
from pipes_docker.swarm.launcher import ServiceLauncher, ServiceOutcome
from pipes_docker.swarm.spec import (
    SERVICE_LABEL,
    build_service_spec,
    check_service_kwargs,
    merge_service_kwargs,
    pop_service_env,
    service_name,
)

if TYPE_CHECKING:
    import docker  # only for the docker_client annotation: docker-py is called in dockerapi/

__all__ = ["PipesDockerSwarmClient"]

_WHY_STREAMED = "a Swarm task runs on a node that shares no filesystem with the orchestrator"


class PipesDockerSwarmClient(PipesClient, TreatAsResourceParam):
    """A Pipes client that runs each job as a Docker Swarm ``replicated-job`` service.

    The Swarm sibling of :class:`PipesDockerClient`: one task, never restarted, on whichever
    node the manager picks (``service_kwargs`` constrain it). Nothing is shared with that node
    but the Docker API: the context travels inline in an environment variable, or, when large,
    as Swarm configs (cut into parts under the 500 KiB cap and joined again on the node);
    messages travel on the task's stderr and come back through the service's logs, picked out
    of the output, which is forwarded to the orchestrator's stdout and stderr apart. The exit
    code is the task's. The service and its configs are removed after every run.

    Usable as a Dagster resource::

        @asset
        def my_asset(context: AssetExecutionContext, swarm: PipesDockerSwarmClient):
            return swarm.run(
                context=context,
                image="registry.example.com/my-job:1",
                service_kwargs={"constraints": ["node.labels.gpu==true"]},
            ).get_materialize_result()

        defs = Definitions(assets=[my_asset], resources={"swarm": PipesDockerSwarmClient()})

    Args:
        docker_client: A docker-py client of a Swarm *manager*. By default one is made from the
            environment (``DOCKER_HOST``) on the first run and reused after.
        env: Environment variables for every run's task.
        forward_stdio: Whether to forward the task's stdout/stderr to the orchestrator's.
        service_kwargs: docker-py ``services.create`` keywords for every run
            (``constraints``, ``resources``, ``mounts``, ``networks``, ``user``, ...); a run's
            own ``service_kwargs`` win (env, labels and lists add up).
        log_dir: When set, each run keeps its task's output in
            ``{log_dir}/{service name}/stdout.log`` and ``stderr.log``.
        forward_termination: When the run is interrupted or times out, whether the task gets
            SIGTERM and ``termination_timeout_seconds`` to exit before SIGKILL; when ``False``
            it gets SIGKILL at once.
        termination_timeout_seconds: The task's stop grace period.
        schedule_timeout_seconds: How long a task may take to start running (being scheduled,
            and its node pulling the image) before the run fails with the scheduler's reason.
        channel: How context and messages travel: :class:`PipesDockerStreamedChannel` (the
            default) or a channel of your own that needs no shared filesystem.
        context_injector: A dagster ``PipesContextInjector`` of your own (instead of
            ``channel``).
        message_reader: A dagster ``PipesMessageReader`` of your own (instead of ``channel``).
        engine: The Swarm seam; defaults to docker-py (``docker_client``). Meant for tests.
    """

    def __init__(
        self,
        *,
        docker_client: docker.DockerClient | None = None,
        env: Mapping[str, str] | None = None,
        forward_stdio: bool = True,
        service_kwargs: Mapping[str, Any] | None = None,
        log_dir: str | None = None,
        forward_termination: bool = True,
        termination_timeout_seconds: float = 20.0,
        schedule_timeout_seconds: float = 60.0,
        channel: PipesDockerChannel | None = None,
        context_injector: PipesContextInjector | None = None,
        message_reader: PipesMessageReader | None = None,
        engine: SwarmEngine | None = None,
    ) -> None:
        if engine is not None and docker_client is not None:
            raise ValueError("Pass docker_client or engine, not both.")
        check_service_kwargs(service_kwargs or {})
        self._engine: SwarmEngine = engine or DockerSwarmEngine(docker_client)
        self._env = dict(env or {})
        self._forward_stdio = forward_stdio
        self._service_kwargs = dict(service_kwargs or {})
        self._log_dir = log_dir
        self._stop_grace = termination_timeout_seconds if forward_termination else 0.0
        self._channel = choose_channel(
            channel=channel,
            context_injector=context_injector,
            message_reader=message_reader,
            default=PipesDockerStreamedChannel,
        )
        self._launcher = ServiceLauncher(
            self._engine, schedule_timeout_seconds=schedule_timeout_seconds
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
        service_kwargs: Mapping[str, Any] | None = None,
        timeout_seconds: float | None = None,
    ) -> PipesClientCompletedInvocation:
        """Run ``image`` as a Swarm job in a Pipes session and wait for it to end.

        Args:
            context: The asset or op execution context.
            image: The image to run; every node that may run the job must have it or be able
                to pull it.
            command: Replaces the image's ``CMD`` (its ``ENTRYPOINT`` stays, as with
                ``docker run``); a string is split shell-style.
            env: Environment variables for this run, over the client's ``env``.
            extras: Extra values for the task's Pipes context.
            service_kwargs: docker-py ``services.create`` keywords for this run, over the
                client's.
            timeout_seconds: Stop the task (remove the service) and fail if it runs longer.

        Returns:
            The completed invocation, as with :class:`PipesDockerClient`; its metadata names
            the service, task, node and exit code.

        Raises:
            PipesDockerContainerError: The job exited non-zero; the message names the node and
                quotes the last lines of its stderr.
            PipesDockerTimeoutError: It ran longer than ``timeout_seconds``.
            PipesDockerImageError: Its node has no such image and cannot pull it.
            PipesDockerLaunchError: The service could not be made, or its task was not running
                within ``schedule_timeout_seconds`` (no node matches its constraints...).
            PipesDockerEngineError: The manager could not be reached.
        """
        run_kwargs = dict(service_kwargs or {})
        check_service_kwargs(run_kwargs)
        options = merge_service_kwargs(self._service_kwargs, run_kwargs)
        with sigterm_unwinds(), awaited_removals("service") as removals:
            return self._run(
                context=context,
                image=image,
                command=command,
                env_layers=[self._env, pop_service_env(options), env or {}],
                extras=extras,
                options=options,
                timeout_seconds=timeout_seconds,
                removals=removals,
            )

    def _run(
        self,
        *,
        context: OpExecutionContext | AssetExecutionContext,
        image: str,
        command: str | Sequence[str] | None,
        env_layers: list[Mapping[str, str]],
        extras: PipesExtras | None,
        options: dict[str, Any],
        timeout_seconds: float | None,
        removals: list[Removal],
    ) -> PipesClientCompletedInvocation:
        with (
            legacy_jobs_noted_at_info(context),
            self._channel.open_without_engine(
                warn=context.log.warning, reason=_WHY_STREAMED
            ) as channel,
            open_pipes_session(
                context=op_context(context),
                context_injector=channel.context_injector,
                message_reader=channel.message_reader,
                extras=extras,
            ) as session,
        ):
            context.log.debug(
                f"[pipes-docker] transport: {channel.transport} ({channel.description})"
            )
            spec = build_service_spec(
                image=image,
                command=command,
                name=service_name(container_name(context)),
                env_layers=env_layers,
                bootstrap_env=session.get_bootstrap_env_vars(),
                labels=labels_for(context),
                options=options,
                files=channel.container_files(),
                stop_grace_seconds=self._stop_grace,
            )
            with output_sinks(
                forward_stdio=self._forward_stdio, log_dir=self._log_dir, run_name=spec.name
            ) as (stdout_sink, stderr_sink):
                stdout, stderr = channel.route_output(stdout_sink, stderr_sink)
                outcome = self._launcher.run(
                    spec,
                    stdout=stdout,
                    stderr=stderr,
                    timeout_seconds=timeout_seconds,
                    on_interrupt=interrupt_logger(context, "the Swarm task"),
                    remove_in_background=True,
                )
                if outcome.removal is not None:
                    removals.append(outcome.removal)
            exit_code = outcome.task.exit_code or 0
            if exit_code != 0:
                tail, tail_stream = output_tail(stdout_sink, stderr_sink, TAIL_LINES)
                raise PipesDockerContainerError(
                    image=spec.image,
                    container_id=outcome.task.container_id or outcome.task.id,
                    exit_code=exit_code,
                    oom_killed=False,
                    memory_limit=None,
                    stderr_tail=tail,
                    tail_stream=tail_stream,
                    # The node's reason when the process never ran (a missing executable).
                    engine_error=_unusual(outcome.task.error),
                    node=outcome.node,
                )
        metadata = self._metadata(image, outcome)
        metadata["pipes_docker/transport"] = channel.transport
        return PipesClientCompletedInvocation(session, metadata=metadata)

    def _metadata(self, image: str, outcome: ServiceOutcome) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "pipes_docker/image": image,
            "pipes_docker/service_id": outcome.service_id,
            "pipes_docker/service_name": outcome.service_name,
            "pipes_docker/task_id": outcome.task.id,
            "pipes_docker/container_id": outcome.task.container_id,
            "pipes_docker/node": outcome.node,
            "pipes_docker/exit_code": outcome.task.exit_code or 0,
            "pipes_docker/duration_seconds": MetadataValue.float(
                round(outcome.duration_seconds, 3)
            ),
            "pipes_docker/engine": self._engine.address,
            "pipes_docker/service_mode": self._engine.service_mode(),
        }
        for stream, path in log_paths(self._log_dir, outcome.service_name).items():
            metadata[f"pipes_docker/{stream}_log"] = MetadataValue.path(path)
        return metadata

    def remove_orphans(self, *, older_than: timedelta = timedelta(hours=6)) -> list[str]:
        """Remove services (and their configs) of ours that a dead orchestrator left behind.

        A service labelled ``io.pipes-docker.managed=true`` is removed, running or not, when the
        orchestrator that made it ran on this host, in this PID namespace, and is gone, or when
        it was created more than ``older_than`` ago. A config of ours is removed when the service
        it was made for is gone and it is just as orphaned. ``older_than=timedelta(0)`` removes
        everything of ours.

        Returns:
            The ids of the services and configs removed.
        """
        now = datetime.now(UTC)

        def orphaned(labels: Mapping[str, str], created: datetime | None) -> bool:
            return orchestrator_gone(labels) or (
                created is not None and now - created >= older_than
            )

        removed = []
        for service in self._engine.list_services({MANAGED_LABEL: "true"}):
            if orphaned(service.labels, service.created):
                self._engine.remove_service(service.id)
                removed.append(service.id)
        services_left = {
            service.name for service in self._engine.list_services({MANAGED_LABEL: "true"})
        }
        for config in self._engine.list_configs({MANAGED_LABEL: "true"}):
            if config.labels.get(SERVICE_LABEL) in services_left:
                continue
            if orphaned(config.labels, config.created):
                self._engine.remove_config(config.id)
                removed.append(config.id)
        return removed


def _unusual(task_error: str | None) -> str | None:
    """The task's error, unless it only restates the exit code."""
    if task_error is None or task_error.startswith("task: non-zero exit"):
        return None
    return task_error
