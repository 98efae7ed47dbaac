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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal

import dagster as dg

from pipes_docker.channels import (
    PipesDockerAutoChannel,
    PipesDockerChannel,
    PipesDockerMountedChannel,
    PipesDockerStreamedChannel,
)
from pipes_docker.client import PipesDockerClient
from pipes_docker.errors import PipesDockerError
from pipes_docker.scaffold import PipesDockerComponentScaffolder
from pipes_docker.swarm import PipesDockerSwarmClient

__all__ = ["PipesDockerComponent", "PipesDockerComponentError", "PipesDockerOp"]

Backend = Literal["container", "swarm"]
ChannelName = Literal["auto", "mounted", "streamed"]

# Attributes that mean something on one backend only: a YAML file that sets one on the other
# backend is refused when the definitions load, naming the attribute.
_CONTAINER_ONLY = ("container_kwargs", "pull_policy", "registry")
_SWARM_ONLY = ("service_kwargs", "schedule_timeout_seconds")


class PipesDockerComponentError(PipesDockerError, ValueError):
    """The component's attributes do not fit together (the message names the attribute)."""


def _described(description: str) -> dg.Resolver:
    return dg.Resolver.default(description=description)


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
    pool: Annotated[
        str | None, _described("The concurrency pool the step takes a slot of.")
    ] = None


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
        str | Sequence[str] | None,
        _described("The command, instead of the image's; a list is passed as is."),
    ] = None
    env: Annotated[
        Mapping[str, str] | None,
        _described("Environment variables of the job; use {{ env('NAME') }} for secrets."),
    ] = None
    extras: Annotated[
        Mapping[str, Any] | None,
        _described("Extra values the job reads from its Pipes context."),
    ] = None
    timeout_seconds: Annotated[
        float | None, _described("Stop the job and fail the step when it runs longer.")
    ] = None
    inject_pipes: Annotated[
        bool,
        _described("Copy the orchestrator's dagster-pipes into an image with Python 3."),
    ] = False
    inject_reporter: Annotated[
        bool,
        _described("Put the `dagster-pipes` shell command on the job's PATH (no Python needed)."),
    ] = False
    backend: Annotated[
        Backend,
        _described("container: one container on one engine; swarm: a Docker Swarm job."),
    ] = "container"
    container_kwargs: Annotated[
        Mapping[str, Any] | None,
        _described("docker-py containers.create keywords (mem_limit, network_mode, user, ...)."),
    ] = None
    pull_policy: Annotated[
        Literal["if_not_present", "always", "never"],
        _described("When the image is pulled: if_not_present, always or never."),
    ] = "if_not_present"
    registry: Annotated[
        Mapping[str, str] | None,
        _described("Pull credentials {url, username, password}; use {{ env('...') }}."),
    ] = None
    service_kwargs: Annotated[
        Mapping[str, Any] | None,
        _described("backend swarm: docker-py services.create keywords (constraints, ...)."),
    ] = None
    schedule_timeout_seconds: Annotated[
        float | None,
        _described("backend swarm: how long the task may take to start running (default 60)."),
    ] = None
    channel: Annotated[
        ChannelName | None,
        _described("How context and messages travel: auto (default), mounted or streamed."),
    ] = None
    temp_dir_root: Annotated[
        str | None,
        _described("auto/mounted channel: where the per-run dirs are made."),
    ] = None
    host_temp_dir_root: Annotated[
        str | None,
        _described("auto/mounted channel: temp_dir_root's path as the engine sees it."),
    ] = None
    forward_stdio: Annotated[
        bool, _described("Forward the job's stdout/stderr to the step's compute logs.")
    ] = True
    log_dir: Annotated[
        str | None, _described("Keep each run's output in {log_dir}/{name}/std*.log.")
    ] = None
    forward_termination: Annotated[
        bool, _described("Give the job SIGTERM and a grace period when the run is stopped.")
    ] = True
    termination_timeout_seconds: Annotated[
        float, _described("The grace period between SIGTERM and SIGKILL.")
    ] = 20.0
    reattach: Annotated[
        bool, _described("Adopt a job an earlier attempt of this step launched (retries).")
    ] = True
    op: Annotated[
        PipesDockerOp | None, _described("The op that runs the job: name, tags, pool.")
    ] = None
    def __post_init__(self) -> None:
        self._check_backend_attributes()

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
        op = self.op or PipesDockerOp()
        name = op.name or self._default_op_name()
        if self.assets:
            return dg.Definitions(assets=[self._multi_asset(name, op)])
        if self.checks:
            return dg.Definitions(asset_checks=[self._multi_check(name, op)])
        raise PipesDockerComponentError(
            f"The component for image {self.image!r} declares no assets and no checks: "
            "add at least one under 'assets' (or 'checks')."
        )

    def execute(
        self, context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
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
        ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
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

    def _channel(self) -> PipesDockerChannel | None:
        dirs = {"temp_dir_root": self.temp_dir_root, "host_temp_dir_root": self.host_temp_dir_root}
        dirs = {key: value for key, value in dirs.items() if value}
        if self.channel == "streamed" or (self.channel is None and self.backend == "swarm"):
            if dirs:
                raise PipesDockerComponentError(
                    f"{' and '.join(dirs)} apply to the auto and mounted channels only; "
                    f"remove them or set 'channel: auto' (backend {self.backend})."
                )
            return PipesDockerStreamedChannel()
        if self.channel == "mounted":
            return PipesDockerMountedChannel(**dirs)
        return PipesDockerAutoChannel(**dirs)

    def _check_backend_attributes(self) -> None:
        defaults = {"pull_policy": "if_not_present"}
        other = _CONTAINER_ONLY if self.backend == "swarm" else _SWARM_ONLY
        wrong = [
            name
            for name in other
            if getattr(self, name) not in (None, defaults.get(name))
        ]
        if wrong:
            raise PipesDockerComponentError(
                f"{', '.join(wrong)} do{'es' if len(wrong) == 1 else ''} not apply to "
                f"backend {self.backend}: remove {'it' if len(wrong) == 1 else 'them'}"
                + (" or set 'backend: swarm'." if self.backend == "container" else ".")
            )
        if self.backend == "swarm" and self.channel in ("auto", "mounted"):
            raise PipesDockerComponentError(
                f"channel {self.channel} needs a filesystem the job shares with the "
                "orchestrator, which a Swarm node does not: remove 'channel' (Swarm streams)."
            )


def _command(command: str | Sequence[str] | None) -> str | list[str] | None:
    if command is None or isinstance(command, str):
        return command
    return [str(part) for part in command]
