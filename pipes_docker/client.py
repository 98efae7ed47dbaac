"""PipesDockerClient: run a Dagster Pipes job in a Docker container."""

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

from pipes_docker.channels import PipesDockerAutoChannel
from pipes_docker.container.backend import ContainerBackend
from pipes_docker.container.engine import ContainerEngine
from pipes_docker.dockerapi.containers import DockerEngine
from pipes_docker.images import PullPolicy, check_pull_policy
from pipes_docker.resource import ClientSettings, PipesDockerClientBase, RunArguments, one_engine

if TYPE_CHECKING:
    import docker

__all__ = ["PipesDockerClient", "PullPolicy"]


class PipesDockerClient(PipesDockerClientBase):
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
        container_kwargs: docker-py ``containers.create`` keywords for every run (``user``,
            ``mem_limit``, ``network_mode``, ...); a run's own ``container_kwargs`` win.
        pull_policy: ``"if_not_present"`` pulls a missing image, ``"always"`` pulls before every
            run, ``"never"`` fails at once when the image is missing.
        registry: Credentials for pulls: ``{"url", "username", "password"}`` (values may be
            ``dagster.EnvVar``); a run's own ``registry`` wins. Never logged.
        channel: How context and messages travel. Defaults to
            :class:`PipesDockerAutoChannel`: mounted where the engine shares our temp dir,
            streamed elsewhere. :class:`PipesDockerMountedChannel` and
            :class:`PipesDockerStreamedChannel` pick one explicitly.
        context_injector: A dagster ``PipesContextInjector`` of your own (instead of
            ``channel``); without a ``message_reader``, messages come over stderr.
        message_reader: A dagster ``PipesMessageReader`` of your own (instead of ``channel``);
            without a ``context_injector``, the context goes inline or is copied in.
        engine: The engine seam; defaults to docker-py (``docker_client``). Meant for tests.
        **settings: What every client takes (:class:`~pipes_docker.resource.ClientSettings`):
            ``forward_stdio``, ``log_dir``, ``forward_termination``,
            ``termination_timeout_seconds``, ``reattach`` (on the streamed channel it keeps
            the container's output with the engine's log driver), ``output_rules``.
    """

    client_name = "pipes_docker.PipesDockerClient"
    default_channel = PipesDockerAutoChannel

    def __init__(
        self,
        # The first four may be positional, in dagster-docker's order, so its users' code runs.
        env: Mapping[str, str] | None = None,
        registry: Mapping[str, str] | None = None,
        context_injector: PipesContextInjector | None = None,
        message_reader: PipesMessageReader | None = None,
        *,
        docker_client: docker.DockerClient | None = None,
        container_kwargs: Mapping[str, Any] | None = None,
        pull_policy: PullPolicy = "if_not_present",
        engine: ContainerEngine | None = None,
        **settings: Unpack[ClientSettings],
    ) -> None:
        self._engine = one_engine(engine, docker_client, lambda: DockerEngine(docker_client))
        policy = check_pull_policy(pull_policy)
        host = ContainerBackend(self._engine, pull_policy=policy, registry=registry)
        super().__init__(host, env, container_kwargs, context_injector, message_reader, **settings)

    def run(  # type: ignore[override]
        self,
        *,
        context: OpExecutionContext | AssetExecutionContext,
        image: str,
        container_kwargs: Mapping[str, Any] | None = None,
        **arguments: Unpack[RunArguments],
    ) -> PipesClientCompletedInvocation:
        """Run ``image`` in a container as a Pipes session and wait for it to end.

        Args:
            context: The asset or op execution context.
            image: The image to run.
            container_kwargs: docker-py ``containers.create`` keywords for this run, over the
                client's.
            **arguments: What every client's ``run()`` takes
                (:class:`~pipes_docker.resource.RunArguments`): ``command`` (a string is split
                by the engine's rules), ``env``, ``extras``, ``timeout_seconds``,
                ``inject_pipes``, ``inject_reporter``, ``output_rules``, ``copy_out``,
                ``registry``.

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
        return self._run(context, image, container_kwargs, arguments)
