"""PipesDockerComponent: a container job as Dagster assets, declared in a ``defs.yaml``.

A Dagster user who has an image should not need Python to make it an asset. The component's
attributes are what :meth:`PipesDockerClient.run` and the clients' constructors take, plus the
assets and checks the job reports on; :meth:`PipesDockerComponent.build_defs` makes one
multi-asset whose body is a plain ``client.run(...)``, so YAML users get the same pipeline as
Python users, and nothing of a run is decided here.

Where a new ``run()`` keyword plugs in: declare the attribute on the component and add it to
:meth:`PipesDockerComponent.run_kwargs` (and a commented line to the scaffold's template in
``pipes_docker/scaffold.py``). A client-level setting goes into :meth:`client_kwargs`.
"""

import re
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal

import dagster as dg
from pydantic import BaseModel, TypeAdapter

from pipes_docker.channels import (
    PipesDockerAutoChannel,
    PipesDockerChannel,
    PipesDockerMountedChannel,
    PipesDockerStreamedChannel,
)
from pipes_docker.client import PipesDockerClient
from pipes_docker.errors import PipesDockerError
from pipes_docker.retrieve import PipesDockerCopyOut
from pipes_docker.rules import PipesDockerOutputRule
from pipes_docker.scaffold import PipesDockerComponentScaffolder
from pipes_docker.swarm import PipesDockerSwarmClient

__all__ = ["PipesDockerComponent", "PipesDockerComponentError", "PipesDockerOp"]

Backend = Literal["container", "swarm"]
ChannelName = Literal["auto", "mounted", "streamed"]
PullPolicy = Literal["if_not_present", "always", "never"]
Command = str | Sequence[str] | None
Seconds = float | None
Strings = Mapping[str, str] | None
Text = str | None
Values = Mapping[str, Any] | None

# Attributes that mean something on one backend only: a YAML file that sets one on the other
# backend is refused when the definitions load, naming the attribute.
_CONTAINER_ONLY = ("container_kwargs", "pull_policy", "registry")
_SWARM_ONLY = ("service_kwargs", "schedule_timeout_seconds")


class PipesDockerComponentError(PipesDockerError, ValueError):
    """The component's attributes do not fit together; ``attribute`` names the one to fix."""

    def __init__(self, message: str, *, attribute: str | None = None) -> None:
        super().__init__(message)
        self.attribute = attribute


def _described(description: str) -> dg.Resolver:
    resolver: dg.Resolver = dg.Resolver.default(description=description)
    return resolver


def _checked(annotation: Any, description: str) -> dg.Resolver:
    """Resolve templates, then hold the value to ``annotation``.

    Dagster's YAML schema lets a string stand for any field (it may be a ``{{ }}`` template), so
    a wrong type would get through to the first run; checked here, ``dg check defs`` names the
    attribute, file and line. Strings convert where they can (``"600"`` to ``600.0``).
    """
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)

    def resolve(context: dg.ResolutionContext, value: Any) -> Any:
        return adapter.validate_python(context.resolve_value(value))

    return dg.Resolver(
        resolve,
        model_field_type=annotation,
        description=description,
        inject_before_resolve=False,
    )


@dataclass
class PipesDockerOp(dg.Resolvable):
    """The op (step) that runs the container."""

    name: Annotated[
        str | None,
        _described("The op's name; defaults to the first asset's key, joined with '_'."),
    ] = None
    description: Annotated[str | None, _described("The op's description.")] = None
    tags: Annotated[
        Mapping[str, str] | None, _described("Tags on the op (e.g. concurrency keys).")
    ] = None
    pool: Annotated[str | None, _described("The concurrency pool the step takes a slot of.")] = None


@dg.scaffold_with(PipesDockerComponentScaffolder)
@dataclass
class PipesDockerComponent(dg.Component, dg.Resolvable):
    """Runs an image as a Dagster Pipes job and materializes the assets it reports on.

    The job runs through :class:`PipesDockerClient` (a container on one engine) or, with
    ``backend: swarm``, :class:`PipesDockerSwarmClient` (a Swarm job on any node). One instance
    may declare several assets (one job that writes several tables) and asset checks; the job
    reports them through dagster-pipes (Python, or the ``dagster-pipes`` shell command with
    ``inject_reporter``). A job that reports nothing (a legacy job) still materializes its
    assets when it exits 0, with the run's metadata.

    Example ``defs.yaml``::

        type: pipes_docker.PipesDockerComponent
        attributes:
          image: registry.example.com/word-counts:1
          env:
            API_TOKEN: "{{ env('API_TOKEN') }}"
          assets:
            - key: word_counts
              kinds: [docker]
    """

    image: Annotated[str, _described("The image to run (required).")]
    assets: Annotated[
        Sequence[dg.ResolvedAssetSpec],
        _described("The assets the job materializes (key, deps, description, group_name, ...)."),
    ] = ()
    checks: Annotated[
        Sequence[dg.ResolvedAssetCheckSpec],
        _described("The asset checks the job reports (name, asset, description, blocking)."),
    ] = ()
    command: Annotated[
        Command, _checked(Command, "The command, instead of the image's; a list is passed as is.")
    ] = None
    env: Annotated[
        Strings, _checked(Strings, "The job's environment; {{ env('NAME') }} for secrets.")
    ] = None
    extras: Annotated[
        Values, _checked(Values, "Extra values the job reads from its Pipes context.")
    ] = None
    timeout_seconds: Annotated[
        Seconds, _checked(Seconds, "Stop the job and fail the step when it runs longer.")
    ] = None
    inject_pipes: Annotated[
        bool, _checked(bool, "Copy the orchestrator's dagster-pipes into an image with Python 3.")
    ] = False
    inject_reporter: Annotated[
        bool, _checked(bool, "Put the `dagster-pipes` shell command on the job's PATH (no Python).")
    ] = False
    output_rules: Annotated[
        Sequence[Mapping[str, Any]] | None,
        _checked(
            Sequence[Mapping[str, Any]] | None,
            "How to read an unmodified job's lines: pattern + log_level / metadata / check.",
        ),
    ] = None
    copy_out: Annotated[
        Values,
        _checked(Values, "Files to bring back after the job: paths, destination, max_bytes."),
    ] = None
    backend: Annotated[
        Backend, _checked(Backend, "container: a container on one engine; swarm: a Swarm job.")
    ] = "container"
    container_kwargs: Annotated[
        Values, _checked(Values, "docker-py containers.create keywords (mem_limit, user, ...).")
    ] = None
    pull_policy: Annotated[
        PullPolicy, _checked(PullPolicy, "When the image is pulled: if_not_present, always, never.")
    ] = "if_not_present"
    registry: Annotated[
        Strings, _checked(Strings, "Pull credentials {url, username, password}; never logged.")
    ] = None
    service_kwargs: Annotated[
        Values, _checked(Values, "backend swarm: docker-py services.create keywords.")
    ] = None
    schedule_timeout_seconds: Annotated[
        Seconds, _checked(Seconds, "backend swarm: how long the task may take to start (60).")
    ] = None
    channel: Annotated[
        ChannelName | None,
        _checked(ChannelName | None, "How context and messages travel: auto, mounted, streamed."),
    ] = None
    temp_dir_root: Annotated[
        Text, _checked(Text, "auto/mounted channel: where the per-run dirs are made.")
    ] = None
    host_temp_dir_root: Annotated[
        Text, _checked(Text, "auto/mounted channel: temp_dir_root's path as the engine sees it.")
    ] = None
    forward_stdio: Annotated[
        bool, _checked(bool, "Forward the job's stdout/stderr to the step's compute logs.")
    ] = True
    log_dir: Annotated[
        Text, _checked(Text, "Keep each run's output in {log_dir}/{name}/std*.log.")
    ] = None
    forward_termination: Annotated[
        bool, _checked(bool, "Give the job SIGTERM and a grace period when the run is stopped.")
    ] = True
    termination_timeout_seconds: Annotated[
        float, _checked(float, "The grace period between SIGTERM and SIGKILL.")
    ] = 20.0
    reattach: Annotated[
        bool, _checked(bool, "Adopt a job an earlier attempt of this step launched (retries).")
    ] = True
    op: Annotated[
        PipesDockerOp | None, _described("The op that runs the job: name, tags, pool.")
    ] = None

    def __post_init__(self) -> None:
        self._check_backend_attributes()
        # Made now, so that a bad pattern or argument fails when the definitions load.
        self._rules = [
            self._made(PipesDockerOutputRule, "output_rules", rule)
            for rule in self.output_rules or ()
        ]
        if self.copy_out:
            self._made(PipesDockerCopyOut, "copy_out", self.copy_out)

    @staticmethod
    def _made(kind: Any, attribute: str, arguments: Mapping[str, Any]) -> Any:
        try:
            return kind(**arguments)
        except (PipesDockerError, TypeError) as exc:
            raise PipesDockerComponentError(f"{attribute}: {exc}", attribute=attribute) from exc

    @classmethod
    def resolve_from_model(cls, context: dg.ResolutionContext, model: BaseModel) -> Any:
        """Resolve as Dagster does; an attribute that does not fit the others is reported at its
        line of the ``defs.yaml``, as Dagster reports a field of the wrong type."""
        try:
            return super().resolve_from_model(context, model)
        except PipesDockerComponentError as exc:
            if exc.attribute is None:
                raise
            raise context.at_path(exc.attribute).build_resolve_fn_exc(
                traceback.format_exception_only(exc), field_name=exc.attribute, model=model
            ) from None

    # -- what the clients get ------------------------------------------------------------------

    def run_kwargs(self) -> dict[str, Any]:
        """The keywords of ``client.run(...)`` (besides ``context``) for every run."""
        kwargs: dict[str, Any] = {
            "image": self.image,
            "command": _command(self.command),
            "env": dict(self.env or {}),
            "extras": dict(self.extras or {}),
            "timeout_seconds": self.timeout_seconds,
            "inject_pipes": self.inject_pipes,
            "inject_reporter": self.inject_reporter,
            "output_rules": self._rules,
            "copy_out": PipesDockerCopyOut(**self.copy_out) if self.copy_out else None,
        }
        if self.backend == "swarm":
            kwargs["service_kwargs"] = dict(self.service_kwargs or {})
        else:
            kwargs["container_kwargs"] = dict(self.container_kwargs or {})
        return kwargs

    def client_kwargs(self) -> dict[str, Any]:
        """The keywords of the client's constructor."""
        kwargs: dict[str, Any] = {
            "forward_stdio": self.forward_stdio,
            "log_dir": self.log_dir,
            "forward_termination": self.forward_termination,
            "termination_timeout_seconds": self.termination_timeout_seconds,
            "reattach": self.reattach,
            "channel": self._channel(),
        }
        if self.backend == "swarm":
            if self.schedule_timeout_seconds is not None:
                kwargs["schedule_timeout_seconds"] = self.schedule_timeout_seconds
        else:
            kwargs["pull_policy"] = self.pull_policy
            kwargs["registry"] = dict(self.registry) if self.registry else None
        return kwargs

    def build_client(self) -> PipesDockerClient | PipesDockerSwarmClient:
        """The client every run of this component goes through; override to supply your own.

        It connects to the engine on its first run, so loading the definitions needs none.
        """
        if self.backend == "swarm":
            return PipesDockerSwarmClient(**self.client_kwargs())
        return PipesDockerClient(**self.client_kwargs())

    @cached_property
    def client(self) -> PipesDockerClient | PipesDockerSwarmClient:
        """The one client of this instance (made on first use), shared by its runs."""
        return self.build_client()

    # -- Dagster definitions -------------------------------------------------------------------

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        if not self.assets and not self.checks:
            raise PipesDockerComponentError(
                f"The component for image {self.image!r} declares no assets and no checks: "
                "add at least one under 'assets' (or 'checks')."
            )
        op = self.op or PipesDockerOp()
        name = op.name or self._default_op_name()
        if self.assets:
            return dg.Definitions(assets=[self._multi_asset(name, op)])
        return dg.Definitions(asset_checks=[self._multi_check(name, op)])

    def execute(
        self, context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext
    ) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
        """One run of the job: what the job reported, with the run's metadata."""
        run_context = (
            context.op_execution_context
            if isinstance(context, dg.AssetCheckExecutionContext)
            else context
        )
        invocation = self.client.run(context=run_context, **self.run_kwargs())
        for result in invocation.get_results():
            if isinstance(result, dg.MaterializeResult | dg.AssetCheckResult):
                yield result

    def _multi_asset(self, name: str, op: PipesDockerOp) -> dg.AssetsDefinition:
        @dg.multi_asset(
            name=name,
            specs=list(self.assets),
            check_specs=list(self.checks) or None,
            description=op.description,
            op_tags=dict(op.tags or {}) or None,
            pool=op.pool,
        )
        def _run_container(
            context: dg.AssetExecutionContext,
        ) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
            yield from self.execute(context)

        return _run_container

    def _multi_check(self, name: str, op: PipesDockerOp) -> dg.AssetChecksDefinition:
        @dg.multi_asset_check(
            name=name,
            specs=list(self.checks),
            description=op.description,
            op_tags=dict(op.tags or {}) or None,
            pool=op.pool,
        )
        def _run_container(
            context: dg.AssetCheckExecutionContext,
        ) -> Iterator[dg.AssetCheckResult]:
            for result in self.execute(context):
                if isinstance(result, dg.AssetCheckResult):
                    yield result

        return _run_container

    # -- checks and defaults -------------------------------------------------------------------

    def _default_op_name(self) -> str:
        if self.assets:
            words = self.assets[0].key.path
        else:
            first = self.checks[0]
            words = [*first.asset_key.path, first.name]
        return re.sub(r"[^A-Za-z0-9_]", "_", "_".join(words))

    def _channel(self) -> PipesDockerChannel:
        if self.channel == "streamed" or self.backend == "swarm":
            return PipesDockerStreamedChannel()
        # An empty value (an unset {{ env('...', '') }}) means the default.
        root, host_root = self.temp_dir_root or None, self.host_temp_dir_root or None
        if self.channel == "mounted":
            return PipesDockerMountedChannel(temp_dir_root=root, host_temp_dir_root=host_root)
        return PipesDockerAutoChannel(temp_dir_root=root, host_temp_dir_root=host_root)

    def _check_backend_attributes(self) -> None:
        defaults = {"pull_policy": "if_not_present"}
        other = _CONTAINER_ONLY if self.backend == "swarm" else _SWARM_ONLY
        wrong = [name for name in other if getattr(self, name) not in (None, defaults.get(name))]
        if wrong:
            raise PipesDockerComponentError(
                f"{wrong[0]} does not apply to backend {self.backend}: remove it"
                + (" or set 'backend: swarm'." if self.backend == "container" else "."),
                attribute=wrong[0],
            )
        if self.backend == "swarm" and self.channel in ("auto", "mounted"):
            raise PipesDockerComponentError(
                f"channel {self.channel} needs a filesystem the job shares with the "
                "orchestrator, which a Swarm node does not: remove 'channel' (Swarm streams).",
                attribute="channel",
            )
        dirs = [name for name in ("temp_dir_root", "host_temp_dir_root") if getattr(self, name)]
        if dirs and (self.channel == "streamed" or self.backend == "swarm"):
            raise PipesDockerComponentError(
                f"{dirs[0]} applies to the auto and mounted channels only: remove it"
                + (" or set 'channel: auto'." if self.backend == "container" else "."),
                attribute=dirs[0],
            )


def _command(command: str | Sequence[str] | None) -> str | list[str] | None:
    if command is None or isinstance(command, str):
        return command
    return [str(part) for part in command]
