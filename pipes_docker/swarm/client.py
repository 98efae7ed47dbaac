"""PipesDockerSwarmClient: run a Dagster Pipes job as a Docker Swarm job, on any node."""

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

from pipes_docker.channels import PipesDockerChannel, PipesDockerStreamedChannel, choose_channel
from pipes_docker.dockerapi.services import DockerSwarmEngine
from pipes_docker.errors import PipesDockerConfigError
from pipes_docker.ownership import sweep
from pipes_docker.pipeline import RunPipeline, RunSettings
from pipes_docker.retrieve import PipesDockerCopyOut
from pipes_docker.rules import PipesDockerOutputRule, check_rules
from pipes_docker.swarm.backend import SwarmBackend
from pipes_docker.swarm.engine import SwarmEngine

__all__ = ["PipesDockerSwarmClient"]

# Names this client's launches in Dagster's event log (reattach).
CLIENT_NAME = "pipes_docker.PipesDockerSwarmClient"


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
            the grace period is 0: SIGTERM, then SIGKILL at once (a SIGTERM handler may start
            but is not waited for).
        termination_timeout_seconds: The task's stop grace period.
        schedule_timeout_seconds: How long a task may take to start running (being scheduled,
            and its node pulling the image) before the run fails with the scheduler's reason.
        channel: How context and messages travel: :class:`PipesDockerStreamedChannel` (the
            default) or a channel of your own that needs no shared filesystem.
        context_injector: A dagster ``PipesContextInjector`` of your own (instead of
            ``channel``).
        message_reader: A dagster ``PipesMessageReader`` of your own (instead of ``channel``).
        reattach: When a step runs again for the same run lineage (a step retry, a resumed
            run worker, a re-execution from failure) and the service an earlier attempt
            launched still runs or ended well, adopt it instead of launching another, reading
            its messages again from the service's logs. One that failed is removed and the job
            runs afresh.
        output_rules: :class:`PipesDockerOutputRule` values applied to every run's output
            lines (log levels, metadata, check results from a job that does not speak Pipes);
            a run's own ``output_rules`` are added to them. A bad pattern fails here.
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
        reattach: bool = True,
        output_rules: Sequence[PipesDockerOutputRule] | None = None,
        engine: SwarmEngine | None = None,
    ) -> None:
        if engine is not None and docker_client is not None:
            raise PipesDockerConfigError("Pass docker_client or engine, not both.")
        self._engine: SwarmEngine = engine or DockerSwarmEngine(docker_client)
        self._pipeline = RunPipeline(
            SwarmBackend(self._engine, schedule_timeout_seconds=schedule_timeout_seconds),
            choose_channel(
                channel=channel,
                context_injector=context_injector,
                message_reader=message_reader,
                default=PipesDockerStreamedChannel,
            ),
            RunSettings(
                env=dict(env or {}),
                options=dict(service_kwargs or {}),
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
        service_kwargs: Mapping[str, Any] | None = None,
        timeout_seconds: float | None = None,
        inject_pipes: bool = False,
        inject_reporter: bool = False,
        output_rules: Sequence[PipesDockerOutputRule] | None = None,
        copy_out: PipesDockerCopyOut | None = None,
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
            inject_pipes: Make ``import dagster_pipes`` work in any image with Python 3: the
                orchestrator's installed dagster-pipes goes into the task as Swarm configs and
                first on its ``PYTHONPATH``.
            inject_reporter: Let a job with no Python report from the shell: the
                ``dagster-pipes`` command (a POSIX ``sh`` program, see ``dagster-pipes --help``)
                and this run's context are copied into the job, and the command's directory is
                put first on its ``PATH``. Needs only ``sh``, ``sed``, ``od`` and ``tr`` (dash
                and coreutils, or BusyBox).

            output_rules: :class:`PipesDockerOutputRule` values for this run, after the
                client's: matching output lines are logged at a level, or their named groups
                become materialization metadata or an asset check result (in ``get_results()``).
                The lines still reach stdout/stderr and the log files unchanged.
            copy_out: Not supported here: a Swarm manager cannot reach its tasks' files, so
                asking for files raises :class:`PipesDockerFilesError` before anything starts.

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

        return self._pipeline.run(
            context=context,
            image=image,
            command=command,
            env=env,
            extras=extras,
            options=service_kwargs,
            timeout_seconds=timeout_seconds,
            inject_pipes=inject_pipes,
            inject_reporter=inject_reporter,
            output_rules=output_rules,
            copy_out=copy_out,
        )

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

        return sweep(self._pipeline.backend, older_than=older_than)
