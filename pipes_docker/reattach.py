"""Reattach: a step that runs again adopts the job its earlier attempt launched.

Each launch is recorded in Dagster's event log (``record_external_launch``) with the engine's
address and what the channel needs to read the job's messages again. When the step runs again
for the same run lineage (a step retry, a resumed run worker, a re-execution from failure) the
latest record is looked up; a job still running, or one that ended well, is adopted and its
messages read again from its start; one that failed is removed and the job runs afresh. The
same for every backend: a container, a Swarm service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

from dagster import AssetExecutionContext, OpExecutionContext
from dagster._core.pipes.reattach import (
    PipesLaunchHandle,
    find_latest_launch_handle,
    record_external_launch,
    record_external_reattach,
)

from pipes_docker.backend import Backend, FoundJob
from pipes_docker.channels import OpenChannel, PipesDockerChannel
from pipes_docker.ownership import orchestrator_alive, orchestrator_labels
from pipes_docker.session import op_context
from pipes_docker.values import frozen

__all__ = ["Adoption", "Reattach"]

logger = logging.getLogger(__name__)


@frozen
class Adoption:
    """A job of an earlier attempt of this step, to be taken over by this one."""

    handle: PipesLaunchHandle
    found: FoundJob
    reopened: AbstractContextManager[OpenChannel]


class Reattach:
    """Records launches and finds them again, for one client (``client_name``) on ``backend``."""

    def __init__(self, backend: Backend, channel: PipesDockerChannel, client_name: str) -> None:
        self._backend = backend
        self._channel = channel
        self._client_name = client_name

    def adoptable(self, context: OpExecutionContext | AssetExecutionContext) -> Adoption | None:
        """The job an earlier attempt of this step launched, if it can be taken over.

        One still running, or one that ended well, is adopted; one that failed is removed so
        that this attempt runs the job afresh.
        """
        try:
            handle = find_latest_launch_handle(op_context(context), client_name=self._client_name)
        except Exception:  # no step (a direct invocation) or no instance: nothing to find
            return None
        if handle is None or handle.extras.get("engine") != self._backend.address:
            return None
        found = self._backend.find(handle.external_run_id)
        if found is None:
            return None
        target = found.job.target
        same_attempt = handle.retry_number == op_context(context).retry_number
        if same_attempt and orchestrator_alive(found.labels):
            # This attempt's own job, driven by a live process (a step may run several jobs
            # at once): not an earlier attempt's to take over.
            return None
        if not found.running and found.exit_code != 0:
            context.log.info(
                f"[pipes-docker] {target} of an earlier attempt exited with code"
                f" {found.exit_code}; removing it and running the job afresh"
            )
            found.job.remove()
            return None
        reopened = self._channel.reopen(
            {k: str(v) for k, v in handle.extras.items()}, warn=context.log.warning
        )
        if reopened is None:
            context.log.warning(
                f"[pipes-docker] {target} of an earlier attempt is still there, but its"
                " messages cannot be read again from here (its temp dir is gone, or its channel"
                " cannot replay them); removing it and running the job afresh"
            )
            found.job.remove()
            return None
        return Adoption(handle, found, reopened)

    def adopted(
        self, context: OpExecutionContext | AssetExecutionContext, adoption: Adoption
    ) -> None:
        """Say in Dagster's event log and the step's logs that ``adoption`` was taken over."""
        record_external_reattach(op_context(context), adoption.handle)
        target = adoption.found.job.target
        context.log.info(
            f"[pipes-docker] reattached to {target} launched by an earlier attempt of this step"
        )

    def recorder(
        self,
        context: OpExecutionContext | AssetExecutionContext,
        launch_record: Mapping[str, str],
    ) -> Callable[[str], None]:
        """The call that records a launch once the job exists (``on_created``: the launcher
        makes it while the engine starts the job, and before the job is waited for)."""

        def record(job_id: str) -> None:
            try:
                record_external_launch(
                    op_context(context),
                    client_name=self._client_name,
                    external_run_id=job_id,
                    extras={"engine": self._backend.address, **launch_record},
                )
            except Exception:  # no step to record it for (a direct invocation)
                logger.debug("Could not record the launch of %s", job_id, exc_info=True)

        return record

    @contextmanager
    def leased(self, adoption: Adoption | None) -> Iterator[None]:
        """While a job is adopted, a lease says this live process owns it now."""
        if adoption is None:
            yield
            return
        release = self._backend.lease(adoption.found, orchestrator_labels())
        try:
            yield
        finally:
            release()
