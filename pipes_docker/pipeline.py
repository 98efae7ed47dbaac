"""One run, whatever runs the job: the pipeline both clients are thin faces of.

A run merges and checks its options, makes sure of its image, opens its channel and dagster's
Pipes session, launches (or adopts) the job, carries its output and messages, judges its exit,
gathers metadata and cleans up. Only the :class:`~pipes_docker.backend.Backend` differs between
:class:`~pipes_docker.PipesDockerClient` (a container) and
:class:`~pipes_docker.PipesDockerSwarmClient` (a Swarm service), so every feature added here
serves both.

The optional features (output rules, copying files out, the shell reporter) are imported by the
runs that use them: Dagster runs each step in a fresh process, which pays for every module it
imports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from dagster import (
    AssetExecutionContext,
    MetadataValue,
    OpExecutionContext,
    PipesClientCompletedInvocation,
    PipesSession,
    open_pipes_session,
)
from dagster_pipes import PipesExtras

from pipes_docker.backend import Backend, ContainerFile, Job, JobExit, JobSpec, RunImage
from pipes_docker.channels import PipesDockerChannel
from pipes_docker.demux import TAIL_LINES, full_tail, output_tail
from pipes_docker.environment import inject_dagster_pipes, merge_env, resolve_env_vars
from pipes_docker.errors import PipesDockerContainerError, job_failure
from pipes_docker.interrupts import sigterm_unwinds
from pipes_docker.launcher import JobLauncher, JobOutcome
from pipes_docker.ownership import job_name, labels_for
from pipes_docker.reattach import Adoption, Reattach
from pipes_docker.removals import Removal, run_removals
from pipes_docker.session import (
    interrupt_logger,
    legacy_jobs_noted_at_info,
    log_paths,
    op_context,
    output_sinks,
    selected_asset_keys,
)
from pipes_docker.values import frozen

if TYPE_CHECKING:
    from pipes_docker.retrieve import PipesDockerCopyOut
    from pipes_docker.rules import PipesDockerOutputRule, RunRules

__all__ = ["RunPipeline", "RunSettings"]


@frozen
class RunSettings:
    """What a client fixes for all its runs."""

    env: Mapping[str, str]
    options: Mapping[str, Any]
    forward_stdio: bool
    log_dir: str | None
    forward_termination: bool
    termination_timeout_seconds: float
    reattach: bool
    output_rules: Sequence[PipesDockerOutputRule] = ()


@frozen
class _Ran:
    outcome: JobOutcome
    session: PipesSession
    transport: str
    adopted: bool
    name: str
    rules: RunRules | None
    image_metadata: Mapping[str, Any] | None


class RunPipeline:
    """Runs jobs on ``backend`` as Pipes sessions, one call to :meth:`run` per run.

    Holds configuration only, so one pipeline serves concurrent runs.
    """

    def __init__(
        self,
        backend: Backend,
        channel: PipesDockerChannel,
        settings: RunSettings,
        *,
        client_name: str,
    ) -> None:
        backend.options.check(settings.options)
        self._client_rules = _checked_rules(settings.output_rules)
        self.backend = backend
        self._channel = channel
        self._settings = settings
        self._reattach = Reattach(backend, channel, client_name)
        self._launcher = JobLauncher(
            backend, termination_timeout_seconds=settings.termination_timeout_seconds
        )

    def run(
        self,
        *,
        context: OpExecutionContext | AssetExecutionContext,
        image: str,
        command: str | Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        extras: PipesExtras | None = None,
        options: Mapping[str, Any] | None = None,
        timeout_seconds: float | None = None,
        inject_pipes: bool = False,
        inject_reporter: bool = False,
        output_rules: Sequence[PipesDockerOutputRule] | None = None,
        copy_out: PipesDockerCopyOut | None = None,
        registry: Mapping[str, str] | None = None,
    ) -> PipesClientCompletedInvocation:
        rules = (*self._client_rules, *_checked_rules(output_rules))
        if copy_out is not None:
            from pipes_docker.retrieve import check_copy_out

            check_copy_out(copy_out)
            self.backend.check_copy_out()
        run_options = dict(options or {})
        self.backend.options.check(run_options)
        merged = self.backend.options.merge(self._settings.options, run_options)
        with sigterm_unwinds():
            env_layers: list[Mapping[str, str]] = [
                resolve_env_vars(self._settings.env, "the client's env"),
                resolve_env_vars(self.backend.options.pop_env(merged), "the environment keyword"),
                resolve_env_vars(env or {}, "env"),
            ]
            # An injection reads the image's env, so it must be there now; otherwise the engine
            # is trusted to have it, and it is pulled only if it says not.
            run_image = self.backend.prepare_image(
                image, registry, now=inject_pipes or inject_reporter
            )
            files: list[ContainerFile] = []
            # One inspect serves both injections (each keeps the PATH/PYTHONPATH it found).
            image_env = self.backend.image_env(run_image) if inject_pipes or inject_reporter else {}
            if inject_pipes:
                injected = inject_dagster_pipes(image_env, env_layers)
                env_layers.append(injected.env)
                files.extend(injected.files)
            # The reporter's context is known only once the session is open.
            reporter_image_env = image_env if inject_reporter else None
            with run_removals() as removals:
                ran = self._run_session(
                    context=context,
                    image=run_image,
                    command=command,
                    env_layers=env_layers,
                    files=files,
                    extras=extras,
                    options=merged,
                    timeout_seconds=timeout_seconds,
                    removals=removals,
                    reporter_image_env=reporter_image_env,
                    rules=rules,
                    files_out=copy_out,
                )
        if ran.rules is not None:  # the session is closed: the job's own reports are all in
            ran.rules.report(ran.session.message_handler.get_reported_results, context.log)
        image_metadata = ran.image_metadata
        if image_metadata is None:  # not looked up while the job ran
            image_metadata = self._image_metadata(run_image, context)
        metadata = self._metadata(image, image_metadata, ran.outcome, ran.name)
        metadata["pipes_docker/transport"] = ran.transport
        if ran.adopted:
            metadata["pipes_docker/reattached"] = True
        return PipesClientCompletedInvocation(ran.session, metadata=metadata)

    def _run_session(
        self,
        *,
        context: OpExecutionContext | AssetExecutionContext,
        image: RunImage,
        command: str | Sequence[str] | None,
        env_layers: list[Mapping[str, str]],
        files: list[ContainerFile],
        extras: PipesExtras | None,
        options: dict[str, Any],
        timeout_seconds: float | None,
        removals: list[Removal],
        reporter_image_env: Mapping[str, str] | None,
        rules: Sequence[PipesDockerOutputRule],
        files_out: PipesDockerCopyOut | None,
    ) -> _Ran:
        settings = self._settings
        adoption: Adoption | None = self._reattach.adoptable(context) if settings.reattach else None
        channel_cm = (
            adoption.reopened
            if adoption is not None
            else self.backend.open_channel(self._channel, image=image, warn=context.log.warning)
        )
        image_metadata: Mapping[str, Any] | None = None
        with (
            legacy_jobs_noted_at_info(context) as note,
            channel_cm as channel,
            open_pipes_session(
                context=op_context(context),
                context_injector=channel.context_injector,
                message_reader=channel.message_reader,
                extras=extras,
            ) as session,
        ):
            transport_note = (
                f"[pipes-docker] transport: {channel.transport} ({channel.description})"
            )
            if adoption is not None:
                context.log.debug(transport_note)

            def on_started(job_id: str) -> None:
                # The job runs: what is said and looked up here costs it nothing.
                nonlocal image_metadata
                note.on_started(job_id)
                context.log.debug(transport_note)
                image_metadata = self._image_metadata(image, context, quiet=True)

            if reporter_image_env is not None and adoption is None:
                # The shell reporter: its files and env come from this session's bootstrap
                # params and context.
                from pipes_docker.reporter import reporter_injection

                reporter = reporter_injection(
                    session.get_bootstrap_env_vars(),
                    session.context_data,
                    image_env=reporter_image_env,
                    env_layers=env_layers,
                )
                env_layers = [*env_layers, reporter.env]
                files = [*files, *reporter.files]
            user_labels = dict(options.pop("labels", None) or {})
            name = str(options.pop("name", None) or job_name(context))
            if adoption is not None:
                name = adoption.found.job.target.name or name
            spec = JobSpec(
                image=image,
                name=name,
                command=command,
                env=merge_env(env_layers, session.get_bootstrap_env_vars()),
                labels={**user_labels, **labels_for(context)},
                options=options,
                mounts=channel.mounts,
                files=[*channel.container_files(), *files],
                keep_output=settings.reattach and channel.keep_output,
                stop_grace_seconds=(
                    settings.termination_timeout_seconds if settings.forward_termination else 0.0
                ),
            )
            if adoption is not None:
                note.job_ran()
                self._reattach.adopted(context, adoption)
            with (
                _watching(rules, context, session) as watching,
                output_sinks(
                    forward_stdio=settings.forward_stdio,
                    log_dir=settings.log_dir,
                    run_name=name,
                    watch=watching.watcher if watching is not None else None,
                ) as (stdout_sink, stderr_sink),
                self._reattach.leased(adoption),
            ):
                stdout, stderr = channel.route_output(stdout_sink, stderr_sink)
                outcome = self._launcher.run(
                    spec,
                    stdout=stdout,
                    stderr=stderr,
                    timeout_seconds=timeout_seconds,
                    on_interrupt=interrupt_logger(context, f"the {self.backend.kind}"),
                    graceful_stop=settings.forward_termination,
                    remove_in_background=True,
                    on_created=(
                        self._reattach.recorder(context, channel.launch_record)
                        if settings.reattach
                        else None
                    ),
                    on_started=on_started,
                    adopt=adoption.found.job if adoption is not None else None,
                    after_exit=_copying_out(files_out, context),
                )
                if outcome.removal is not None:
                    removals.append(outcome.removal)

            if outcome.exit.exit_code != 0:
                tail, tail_stream = output_tail(stdout_sink, stderr_sink, TAIL_LINES)
                error = job_failure(
                    image=image.name,
                    target=outcome.target,
                    exit_code=outcome.exit.exit_code,
                    oom_killed=outcome.exit.oom_killed,
                    memory_limit=outcome.exit.memory_limit,
                    stderr_tail=tail,
                    tail_stream=tail_stream,
                    engine_error=outcome.exit.error,
                )
                note.job_ran(isinstance(error, PipesDockerContainerError))
                more = full_tail(stdout_sink, stderr_sink, tail_stream, len(tail))
                if more:
                    error.add_note(more)
                raise error
        return _Ran(
            outcome,
            session,
            channel.transport,
            adoption is not None,
            name,
            watching,
            image_metadata,
        )

    def _image_metadata(
        self,
        image: RunImage,
        context: OpExecutionContext | AssetExecutionContext,
        *,
        quiet: bool = False,
    ) -> Mapping[str, Any] | None:
        """The image's metadata; ``None`` (and a warning unless ``quiet``) if the engine
        could not say: the job's outcome does not hang on it."""
        try:
            return self.backend.image_metadata(image)
        except Exception as exc:  # metadata is not worth a run that did its work
            if not quiet:
                context.log.warning(
                    f"[pipes-docker] Could not look up image {image.name!r}:"
                    f" {type(exc).__name__}: {exc}"
                )
            return None

    def _metadata(
        self,
        image: str,
        image_metadata: Mapping[str, Any] | None,
        outcome: JobOutcome,
        run_name: str,
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"pipes_docker/image": image}
        metadata.update(image_metadata or {})
        metadata.update(outcome.metadata)
        metadata["pipes_docker/exit_code"] = outcome.exit.exit_code
        metadata["pipes_docker/duration_seconds"] = MetadataValue.float(
            round(outcome.duration_seconds, 3)
        )
        metadata["pipes_docker/engine"] = self.backend.address
        metadata["pipes_docker/engine_source"] = self.backend.engine_source
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
        for stream, path in log_paths(self._settings.log_dir, run_name).items():
            metadata[f"pipes_docker/{stream}_log"] = MetadataValue.path(path)
        return metadata


def _checked_rules(
    rules: Sequence[PipesDockerOutputRule] | None,
) -> tuple[PipesDockerOutputRule, ...]:
    """``rules`` checked to be rules; the rules module is loaded only when there are some."""
    if not rules:
        return ()
    from pipes_docker.rules import check_rules

    return check_rules(rules)


def _watching(
    rules: Sequence[PipesDockerOutputRule],
    context: OpExecutionContext | AssetExecutionContext,
    session: PipesSession,
) -> AbstractContextManager[RunRules | None]:
    """The run's output rules at work (``None`` without rules)."""
    if not rules:
        return nullcontext()
    from pipes_docker.rules import run_rules

    return run_rules(
        rules,
        asset_keys=selected_asset_keys(context),
        handle=session.message_handler.handle_message,  # type: ignore[arg-type]
        log=context.log,
    )


def _copying_out(
    files_out: PipesDockerCopyOut | None,
    context: OpExecutionContext | AssetExecutionContext,
) -> Callable[[Job, JobExit], Mapping[str, Any]] | None:
    """The launcher's ``after_exit`` step that copies ``files_out`` (``None``: nothing to copy)."""
    if files_out is None:
        return None
    from pipes_docker.retrieve import copy_out_after_exit

    return copy_out_after_exit(files_out, context.log.warning)
