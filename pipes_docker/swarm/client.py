"""PipesDockerSwarmClient: run a Dagster Pipes job as a Docker Swarm job, on any node."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Unpack

from dagster import (
    AssetExecutionContext,
    OpExecutionContext,
    PipesClientCompletedInvocation,
    PipesContextInjector,
    PipesMessageReader,
)

from pipes_docker.channels import PipesDockerStreamedChannel
from pipes_docker.dockerapi.services import DockerSwarmEngine
from pipes_docker.resource import ClientSettings, PipesDockerClientBase, RunArguments, one_engine
from pipes_docker.swarm.backend import SwarmBackend
from pipes_docker.swarm.engine import SwarmEngine

if TYPE_CHECKING:
    import docker

__all__ = ["PipesDockerSwarmClient"]


class PipesDockerSwarmClient(PipesDockerClientBase):
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
        service_kwargs: docker-py ``services.create`` keywords for every run
            (``constraints``, ``resources``, ``mounts``, ``networks``, ``user``, ...); a run's
            own ``service_kwargs`` win (env, labels and lists add up).
        schedule_timeout_seconds: How long a task may take to start running (being scheduled,
            and its node pulling the image) before the run fails with the scheduler's reason.
        channel: How context and messages travel: :class:`PipesDockerStreamedChannel` (the
            default) or a channel of your own that needs no shared filesystem.
        context_injector: A dagster ``PipesContextInjector`` of your own (instead of
            ``channel``).
        message_reader: A dagster ``PipesMessageReader`` of your own (instead of ``channel``).
        engine: The Swarm seam; defaults to docker-py (``docker_client``). Meant for tests.
        **settings: What every client takes (:class:`~pipes_docker.resource.ClientSettings`):
            ``forward_stdio``, ``log_dir``, ``forward_termination`` (when ``False`` the
            task's stop grace period is 0), ``termination_timeout_seconds`` (the task's stop
            grace period), ``reattach`` (the service's messages are read again from its logs),
            ``output_rules``.
    """

    client_name = "pipes_docker.PipesDockerSwarmClient"
    default_channel = PipesDockerStreamedChannel

    def __init__(
        self,
        *,
        docker_client: docker.DockerClient | None = None,
        env: Mapping[str, str] | None = None,
        service_kwargs: Mapping[str, Any] | None = None,
        schedule_timeout_seconds: float = 60.0,
        context_injector: PipesContextInjector | None = None,
        message_reader: PipesMessageReader | None = None,
        engine: SwarmEngine | None = None,
        **settings: Unpack[ClientSettings],
    ) -> None:
        self._engine = one_engine(engine, docker_client, lambda: DockerSwarmEngine(docker_client))
        manager = SwarmBackend(self._engine, schedule_timeout_seconds=schedule_timeout_seconds)
        super().__init__(manager, env, service_kwargs, context_injector, message_reader, **settings)

    def run(  # type: ignore[override]
        self,
        *,
        context: OpExecutionContext | AssetExecutionContext,
        image: str,
        service_kwargs: Mapping[str, Any] | None = None,
        **arguments: Unpack[RunArguments],
    ) -> PipesClientCompletedInvocation:
        """Run ``image`` as a Swarm job in a Pipes session and wait for it to end.

        Args:
            context: The asset or op execution context.
            image: The image to run; every node that may run the job must have it or be able
                to pull it.
            service_kwargs: docker-py ``services.create`` keywords for this run, over the
                client's.
            **arguments: What every client's ``run()`` takes
                (:class:`~pipes_docker.resource.RunArguments`): ``command`` (replaces the
                image's ``CMD`` and keeps its ``ENTRYPOINT``, as ``docker run``; a string is
                split shell-style), ``env``, ``extras``, ``timeout_seconds`` (the service is
                removed), ``inject_pipes`` (dagster-pipes goes in as Swarm configs),
                ``inject_reporter``, ``output_rules``; ``copy_out`` is refused (see the
                README), ``registry`` is not used (each node pulls with its own credentials).

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
        return self._run(context, image, service_kwargs, arguments)
