"""Run a Dagster asset whose body calls a pipes-docker client, and read what the run left.

The one set of job helpers of every suite: the unit tests (fake engine, fake Swarm) and the
integration tests (real engines, a real Swarm) all materialize their jobs through
:func:`run_asset` and read the outcome with :class:`AssetRun` or the functions beside it.
"""

import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetExecutionContext,
    DagsterInstance,
    ExecuteInProcessResult,
    MaterializeResult,
    PipesClientCompletedInvocation,
    asset,
    materialize,
)

from pipes_docker import PipesDockerClient, PipesDockerSwarmClient, wait_for_removals

__all__ = [
    "ASSET",
    "AssetRun",
    "error_of",
    "log_messages",
    "metadata_of",
    "run_asset",
    "warnings_logged",
]

ASSET = "job"  # the asset's name, and its step's key
_RESOURCE = "pipes_client"


def run_asset(
    client: PipesDockerClient | PipesDockerSwarmClient,
    *,
    instance: DagsterInstance | None = None,
    raise_on_error: bool = True,
    every_warning_is_an_error: bool = False,
    custom_messages: list[Any] | None = None,
    all_results: bool = False,
    settle: bool = True,
    **run_kwargs: Any,
) -> ExecuteInProcessResult:
    """Materialize one asset whose body is ``client.run(context=context, **run_kwargs)``.

    The client is the asset's resource, as users wire it. The asset hands on the invocation's
    ``get_materialize_result()``, or with ``all_results`` every one of its ``get_results()``;
    the custom messages it received are appended to ``custom_messages``. With ``settle`` it
    returns once the run's job is removed too (a run that ends well removes it in the
    background), as a check of what a run left behind must.
    """

    def invoke(context: AssetExecutionContext) -> PipesClientCompletedInvocation:
        invocation: PipesClientCompletedInvocation = getattr(context.resources, _RESOURCE).run(
            context=context, **run_kwargs
        )
        if custom_messages is not None:
            custom_messages.extend(invocation.get_custom_messages())
        return invocation

    @asset(name=ASSET, required_resource_keys={_RESOURCE})
    def job(context: AssetExecutionContext) -> MaterializeResult:
        return invoke(context).get_materialize_result()

    @asset(name=ASSET, required_resource_keys={_RESOURCE})
    def job_of_results(context: AssetExecutionContext) -> Iterator[Any]:
        yield from invoke(context).get_results()

    if all_results:
        job = job_of_results

    with warnings.catch_warnings():
        if every_warning_is_an_error:
            # Also the ones pyproject.toml lets through, as a user's `-W error` would.
            warnings.simplefilter("error")
        result = materialize(
            [job], resources={_RESOURCE: client}, instance=instance, raise_on_error=raise_on_error
        )
    if settle:
        assert wait_for_removals(timeout=120), "a background removal did not end in 2 minutes"
    return result


def metadata_of(result: ExecuteInProcessResult) -> dict[str, Any]:
    """The metadata of the asset's one materialization, as plain values."""
    (materialization,) = result.asset_materializations_for_node(ASSET)
    return {key: value.value for key, value in materialization.metadata.items()}


def error_of(result: ExecuteInProcessResult) -> str:
    """The step's error, with its causes, as Dagster reports it."""
    failures = [event for event in result.all_events if event.is_step_failure]
    assert failures, "the step did not fail"
    error = failures[0].step_failure_data.error
    assert error is not None
    return error.to_string()


def log_messages(instance: DagsterInstance, run_id: str) -> list[str]:
    """What the run logged (the step's and the job's messages), in order."""
    return [
        entry.user_message for entry in instance.all_logs(run_id) if entry.dagster_event is None
    ]


def warnings_logged(instance: DagsterInstance, run_id: str) -> list[str]:
    return [
        entry.user_message
        for entry in instance.all_logs(run_id)
        if entry.dagster_event is None and entry.level >= 30
    ]


@dataclass
class AssetRun:
    """The outcome of :func:`run_asset`, with the instance that holds its event log."""

    result: ExecuteInProcessResult
    instance: DagsterInstance

    @property
    def success(self) -> bool:
        return self.result.success

    @property
    def metadata(self) -> Mapping[str, Any]:
        return metadata_of(self.result)

    @property
    def error(self) -> str:
        return error_of(self.result)

    def log_messages(self) -> list[str]:
        return log_messages(self.instance, self.result.run_id)
