"""PipesDockerClient: run a Dagster Pipes job in a Docker container."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import docker
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
from dagster._core.pipes.reattach import (
    PipesLaunchHandle,
    find_latest_launch_handle,
    record_external_launch,
    record_external_reattach,
)
from dagster_pipes import PipesExtras

from pipes_docker.channels import (
    OpenChannel,
    PipesDockerAutoChannel,
    PipesDockerChannel,
    choose_channel,
)
from pipes_docker.demux import TAIL_LINES, LineSink, output_tail
from pipes_docker.engine import (
    ContainerEngine,
    ContainerFile,
    ContainerSpec,
    ContainerState,
    DockerEngine,
)
from pipes_docker.errors import PipesDockerContainerError, PipesDockerImageError
from pipes_docker.interrupts import sigterm_unwinds
from pipes_docker.launcher import ContainerLauncher, ContainerOutcome, Removal, awaited_removals
from pipes_docker.reporter import reporter_injection
from pipes_docker.session import (
    interrupt_logger,
    legacy_jobs_noted_at_info,
    log_paths,
    op_context,
    output_sinks,
)
from pipes_docker.spec import (
    LEASE_LABEL,
    MANAGED_LABEL,
    build_spec,
    check_container_kwargs,
    container_name,
    inject_dagster_pipes,
    labels_for,
    merge_container_kwargs,
    orchestrator_alive,
    orchestrator_gone,
    orchestrator_labels,
    pop_environment,
)

__all__ = ["PipesDockerClient", "PullPolicy"]

PullPolicy = Literal["if_not_present", "always", "never"]

logger = logging.getLogger(__name__)

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
        env: Environment variables for every run's container.
        forward_stdio: Whether to forward the container's stdout/stderr to the orchestrator's.
        container_kwargs: docker-py ``containers.create`` keywords for every run (``user``,
            ``mem_limit``, ``network_mode``, ...); a run's own ``container_kwargs`` win.
        pull_policy: ``"if_not_present"`` pulls a missing image, ``"always"`` pulls before every
            run, ``"never"`` fails at once when the image is missing.
        registry: Credentials for pulls: ``{"url", "username", "password"}``. Never logged.
        log_dir: When set, each run keeps its container's output in
            ``{log_dir}/{container name}/stdout.log`` and ``stderr.log``.
        forward_termination: When the run is interrupted (Dagster terminates it, or the
            orchestrator gets SIGTERM/SIGINT), whether the container gets SIGTERM and
            ``termination_timeout_seconds`` to exit before SIGKILL. When ``False`` it is killed at
            once. Either way its output so far is read and it is removed.
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
        engine: The engine seam; defaults to docker-py (``docker_client``). Meant for tests.
    """

    def __init__(
        self,
        *,
        docker_client: docker.DockerClient | None = None,
        env: Mapping[str, str] | None = None,
        forward_stdio: bool = True,
        container_kwargs: Mapping[str, Any] | None = None,
        pull_policy: PullPolicy = "if_not_present",
        registry: Mapping[str, str] | None = None,
        log_dir: str | None = None,
        forward_termination: bool = True,
        termination_timeout_seconds: float = 20.0,
        channel: PipesDockerChannel | None = None,
        context_injector: PipesContextInjector | None = None,
        message_reader: PipesMessageReader | None = None,
        reattach: bool = True,
        engine: ContainerEngine | None = None,
    ) -> None:
        if pull_policy not in ("if_not_present", "always", "never"):
            raise ValueError(
                f"pull_policy must be 'if_not_present', 'always' or 'never', got {pull_policy!r}"
            )
        if engine is not None and docker_client is not None:
            raise ValueError("Pass docker_client or engine, not both.")
        check_container_kwargs(container_kwargs or {})
        self._engine: ContainerEngine = engine or DockerEngine(docker_client)
        self._env = dict(env or {})
        self._forward_stdio = forward_stdio
        self._container_kwargs = dict(container_kwargs or {})
        self._pull_policy: PullPolicy = pull_policy
        self._registry = dict(registry) if registry else None
        self._log_dir = log_dir
        self._forward_termination = forward_termination
        self._termination_timeout = termination_timeout_seconds
        self._channel = choose_channel(
            channel=channel,
            context_injector=context_injector,
            message_reader=message_reader,
            default=PipesDockerAutoChannel,
        )
        self._reattach = reattach
        self._launcher = ContainerLauncher(
            self._engine, termination_timeout_seconds=termination_timeout_seconds
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
                rebuilding it: the orchestrator's installed dagster-pipes is mounted read-only
                and put first on the container's ``PYTHONPATH`` (ahead of the image's or the
                user's ``PYTHONPATH``, which is kept). The orchestrator's version therefore wins
                over a copy already in the image, so both sides speak the same protocol.
            inject_reporter: Let a job with no Python report from the shell: the
                ``dagster-pipes`` command (a POSIX ``sh`` program, see ``dagster-pipes --help``)
                and this run's context are copied into the container, and the command's
                directory is put first on its ``PATH``. Needs only ``sh``, ``sed``, ``od`` and
                ``tr`` (dash and coreutils, or BusyBox).

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
        run_kwargs = dict(container_kwargs or {})
        check_container_kwargs(run_kwargs)
        options = merge_container_kwargs(self._container_kwargs, run_kwargs)
        with sigterm_unwinds():
            return self._run(
                context=context,
                image=image,
                command=command,
                env=env or {},
                extras=extras,
                options=options,
                timeout_seconds=timeout_seconds,
                inject_pipes=inject_pipes,
                inject_reporter=inject_reporter,
            )

    def _run(
        self,
        *,
        context: OpExecutionContext | AssetExecutionContext,
        image: str,
        command: str | Sequence[str] | None,
        env: Mapping[str, str],
        extras: PipesExtras | None,
        options: dict[str, Any],
        timeout_seconds: float | None,
        inject_pipes: bool,
        inject_reporter: bool,
    ) -> PipesClientCompletedInvocation:
        image_id = self._ensure_image(image)
        env_layers: list[Mapping[str, str]] = [self._env, pop_environment(options), env]
        files: list[ContainerFile] = []
        if inject_pipes:
            injected = inject_dagster_pipes(self._engine.image_env(image), env_layers)
            env_layers.append(injected.env)
            files.extend(injected.files)
        # The reporter's context is known only once the session is open.
        reporter_image_env = self._engine.image_env(image) if inject_reporter else None
        with awaited_removals("container") as removals:
            return self._run_session(
                context=context,
                image=image,
                image_id=image_id,
                command=command,
                env_layers=env_layers,
                files=files,
                extras=extras,
                options=options,
                timeout_seconds=timeout_seconds,
                removals=removals,
                reporter_image_env=reporter_image_env,
            )

    def _run_session(
        self,
        *,
        context: OpExecutionContext | AssetExecutionContext,
        image: str,
        image_id: str,
        command: str | Sequence[str] | None,
        env_layers: list[Mapping[str, str]],
        files: list[ContainerFile],
        extras: PipesExtras | None,
        options: dict[str, Any],
        timeout_seconds: float | None,
        removals: list[Removal],
        reporter_image_env: Mapping[str, str] | None = None,
    ) -> PipesClientCompletedInvocation:
        adoption = self._adoptable(context) if self._reattach else None
        if adoption is not None:
            channel_cm = adoption.reopened
        else:
            channel_cm = self._channel.open(
                engine=self._engine, image=image, warn=context.log.warning
            )
        with (
            legacy_jobs_noted_at_info(context),
            channel_cm as channel,
            open_pipes_session(
                # The op context carries the same run; the asset context's wrappers of it are
                # deprecated and warn when dagster reads them.
                context=getattr(context, "op_execution_context", context),
                context_injector=channel.context_injector,
                message_reader=channel.message_reader,
                extras=extras,
            ) as session,
        ):
            context.log.debug(
                f"[pipes-docker] transport: {channel.transport} ({channel.description})"
            )
            if adoption is None:
                if reporter_image_env is not None:
                    # The shell reporter (inject_reporter): its files and env come from this
                    # session's bootstrap params and context.
                    reporter = reporter_injection(
                        session.get_bootstrap_env_vars(),
                        session.context_data,
                        image_env=reporter_image_env,
                        env_layers=env_layers,
                    )
                    env_layers = [*env_layers, reporter.env]
                    files = [*files, *reporter.files]
                spec = build_spec(
                    image=image,
                    command=command,
                    name=container_name(context),
                    env_layers=env_layers,
                    bootstrap_env=session.get_bootstrap_env_vars(),
                    labels=labels_for(context),
                    options=options,
                    mounts=channel.mounts,
                    files=[*channel.container_files(), *files],
                    keep_output=self._reattach and channel.keep_output,
                )
            else:
                spec = adoption.spec
                record_external_reattach(op_context(context), adoption.handle)
                context.log.info(
                    f"[pipes-docker] reattached to container {adoption.state.id[:12]}"
                    f" ({adoption.state.name}) launched by an earlier attempt of this step"
                )
            with self._sinks(spec.name) as (stdout_sink, stderr_sink), self._leased(adoption):
                stdout, stderr = channel.route_output(stdout_sink, stderr_sink)
                outcome = self._launcher.run(
                    spec,
                    stdout=stdout,
                    stderr=stderr,
                    timeout_seconds=timeout_seconds,
                    on_interrupt=interrupt_logger(context, "the container"),
                    graceful_stop=self._forward_termination,
                    remove_in_background=True,
                    on_started=self._launch_recorder(context, channel.launch_record),
                    adopt=adoption.state if adoption is not None else None,
                )
                if outcome.removal is not None:
                    removals.append(outcome.removal)
            if outcome.exit.exit_code != 0:
                tail, tail_stream = output_tail(stdout_sink, stderr_sink, TAIL_LINES)
                raise PipesDockerContainerError(
                    image=spec.image,
                    container_id=outcome.container_id,
                    exit_code=outcome.exit.exit_code,
                    oom_killed=outcome.exit.oom_killed,
                    memory_limit=outcome.exit.memory_limit,
                    stderr_tail=tail,
                    tail_stream=tail_stream,
                    engine_error=outcome.exit.error,
                )
        metadata = self._metadata(image, image_id, outcome, spec.name)
        metadata["pipes_docker/transport"] = channel.transport
        if adoption is not None:
            metadata["pipes_docker/reattached"] = True
        return PipesClientCompletedInvocation(session, metadata=metadata)

    def _adoptable(self, context: OpExecutionContext | AssetExecutionContext) -> _Adoption | None:
        """The container an earlier attempt of this step launched, if it can be taken over.

        One still running, or one that ended well, is adopted; one that failed is removed so
        that this attempt runs the job afresh.
        """
        try:
            handle = find_latest_launch_handle(op_context(context), client_name=CLIENT_NAME)
        except Exception:  # no step (a direct invocation) or no instance: nothing to find
            return None
        if handle is None or handle.extras.get("engine") != self._engine.address:
            return None
        state = self._engine.container_state(handle.external_run_id)
        if state is None:
            return None
        same_attempt = handle.retry_number == op_context(context).retry_number
        if same_attempt and orchestrator_alive(state.labels):
            # This attempt's own container, driven by a live process (a step may run several
            # containers at once): not an earlier attempt's to take over.
            return None
        if not state.running and state.exit_code != 0:
            context.log.info(
                f"[pipes-docker] container {state.id[:12]} of an earlier attempt exited with"
                f" code {state.exit_code}; removing it and running the job afresh"
            )
            self._engine.remove(state.id)
            return None
        reopened = self._channel.reopen(
            {k: str(v) for k, v in handle.extras.items()}, warn=context.log.warning
        )
        if reopened is None:
            context.log.warning(
                f"[pipes-docker] container {state.id[:12]} of an earlier attempt is still there,"
                " but its messages cannot be read again from here (its temp dir is gone, or"
                " its channel cannot replay them); removing it and running the job afresh"
            )
            self._engine.remove(state.id)
            return None
        spec = ContainerSpec(
            image=state.image, name=state.name, command=None, env={}, labels=state.labels
        )
        return _Adoption(handle, state, spec, reopened)

    def _launch_recorder(
        self,
        context: OpExecutionContext | AssetExecutionContext,
        launch_record: Mapping[str, str],
    ) -> Callable[[str], None] | None:
        if not self._reattach:
            return None

        def record(container_id: str) -> None:
            try:
                record_external_launch(
                    op_context(context),
                    client_name=CLIENT_NAME,
                    external_run_id=container_id,
                    extras={"engine": self._engine.address, **launch_record},
                )
            except Exception:  # no step to record it for (a direct invocation)
                logger.debug("Could not record the launch of %s", container_id, exc_info=True)

        return record

    @contextmanager
    def _leased(self, adoption: _Adoption | None) -> Iterator[None]:
        """While a container is adopted, a lease says this live process owns it now."""
        if adoption is None:
            yield
            return
        lease = self._engine.create_lease(
            adoption.state.id,
            adoption.state.image,
            {**orchestrator_labels(), LEASE_LABEL: adoption.state.id},
        )
        try:
            yield
        finally:
            self._engine.remove(lease)

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

        Returns:
            The ids of the containers removed.
        """
        now = datetime.now(UTC)
        found = list(self._engine.list_containers({MANAGED_LABEL: "true"}))
        # A container adopted by a live orchestrator (reattach) has a lease naming that one.
        leased = {
            (c.get("Labels") or {})[LEASE_LABEL]
            for c in found
            if LEASE_LABEL in (c.get("Labels") or {})
            and not orchestrator_gone(c.get("Labels") or {})
        }
        removed = []
        for container in found:
            labels = container.get("Labels") or {}
            if container["Id"] in leased:
                continue
            created = datetime.fromtimestamp(int(container.get("Created", 0)), UTC)
            if orchestrator_gone(labels) or now - created >= older_than:
                self._engine.remove(container["Id"])
                removed.append(str(container["Id"]))
        return removed

    def _ensure_image(self, image: str) -> str:
        """Pull ``image`` as the pull policy says; return its id on the engine."""
        if self._pull_policy == "always":
            self._engine.pull(image, self._registry_auth())
        else:
            present = self._engine.image_id(image)
            if present is not None:
                return present
            if self._pull_policy == "never":
                raise PipesDockerImageError(
                    f"Image {image!r} is not present on the Docker engine at"
                    f" {self._engine.address} and pull_policy is 'never'."
                    " Build or pull it first, or use pull_policy='if_not_present'.",
                    image=image,
                )
            self._engine.pull(image, self._registry_auth())
        pulled = self._engine.image_id(image)
        if pulled is None:
            raise PipesDockerImageError(
                f"Image {image!r} is still missing on the Docker engine at"
                f" {self._engine.address} after pulling it.",
                image=image,
            )
        return pulled

    def _registry_auth(self) -> Mapping[str, str] | None:
        if not self._registry:
            return None
        auth = {"username": self._registry["username"], "password": self._registry["password"]}
        if "url" in self._registry:
            auth["serveraddress"] = self._registry["url"]
        return auth

    def _sinks(self, container_name: str) -> AbstractContextManager[tuple[LineSink, LineSink]]:
        return output_sinks(
            forward_stdio=self._forward_stdio, log_dir=self._log_dir, run_name=container_name
        )

    def _metadata(
        self, image: str, image_id: str, outcome: ContainerOutcome, container_name: str
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "pipes_docker/image": image,
            "pipes_docker/image_id": image_id,
            "pipes_docker/container_id": outcome.container_id,
            "pipes_docker/container_name": container_name,
            "pipes_docker/exit_code": outcome.exit.exit_code,
            "pipes_docker/duration_seconds": MetadataValue.float(
                round(outcome.duration_seconds, 3)
            ),
            "pipes_docker/engine": self._engine.address,
        }
        digests = self._engine.image_digests(image_id)
        if digests:
            metadata["pipes_docker/image_digest"] = digests[0]
        for key, value in (
            ("started_at", outcome.exit.started_at),
            ("finished_at", outcome.exit.finished_at),
        ):
            if value:
                metadata[f"pipes_docker/{key}"] = value
        # Resource use, as far as the engine reported it: missing figures are left out.
        for key, figure in outcome.usage.items():
            metadata[f"pipes_docker/{key}"] = (
                MetadataValue.float(float(figure))
                if isinstance(figure, float)
                else MetadataValue.int(int(figure))
            )
        for stream, path in log_paths(self._log_dir, container_name).items():
            metadata[f"pipes_docker/{stream}_log"] = MetadataValue.path(path)
        return metadata


@dataclass(frozen=True)
class _Adoption:
    """A container of an earlier attempt of this step, to be taken over by this one."""

    handle: PipesLaunchHandle
    state: ContainerState
    spec: ContainerSpec
    reopened: AbstractContextManager[OpenChannel]
