"""The Swarm backend: each job is a Swarm service of one task, never restarted.

Made through a manager, run on whichever node it picks. Nothing is shared with that node but the
Docker API: files travel as Swarm configs, and the output comes back through the service's logs.
Those are followed live while the task runs; once the task has ended they are read once more
from the start, and only what the live stream had not delivered is passed on. The manager's
follow stream never ends by itself and may lag behind; the second read ends with everything the
node kept, so nothing the task wrote is lost and nothing arrives twice (each stream is counted
in bytes, which holds however the two reads cut the output into frames).
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from pipes_docker.backend import (
    FoundJob,
    JobExit,
    JobSpec,
    OutputFollower,
    OutputStream,
    OwnedObject,
    ResourceSampler,
    RunImage,
    RunTarget,
)
from pipes_docker.channels.base import OpenChannel, PipesDockerChannel
from pipes_docker.errors import (
    PipesDockerError,
    PipesDockerFilesError,
    PipesDockerImageError,
    PipesDockerLaunchError,
)
from pipes_docker.interrupts import deferred_signals
from pipes_docker.messages import ByteSink
from pipes_docker.ownership import LEASE_LABEL, MANAGED_LABEL
from pipes_docker.swarm.engine import ServiceConfig, ServiceSpec, SwarmEngine, TaskStatus
from pipes_docker.swarm.output import LogFollower
from pipes_docker.swarm.spec import SERVICE_LABEL, SERVICE_OPTIONS, service_configs, service_name

__all__ = ["SwarmBackend", "SwarmJob"]

logger = logging.getLogger(__name__)

_FIRST_POLL_SECONDS = 0.05
_MAX_POLL_SECONDS = 0.2
# How long removing a job (its service, the wait for its task to go, its configs) may take beyond
# its stop grace period; past that the run ends anyway and the orphan sweep is left to finish.
REMOVAL_MARGIN_SECONDS = 10.0
# A removal asked for once that time has passed still gets this long.
_LAST_CALL_SECONDS = 1.0

_WHY_STREAMED = "a Swarm task runs on a node that shares no filesystem with the orchestrator"


class SwarmBackend:
    """Runs each job as a Swarm service on a manager's :class:`SwarmEngine`.

    Args:
        engine: The manager.
        schedule_timeout_seconds: How long a task may take to start running (scheduling, and
            the image pull on its node) before the run fails.
    """

    kind = "Swarm task"
    options = SERVICE_OPTIONS

    def __init__(self, engine: SwarmEngine, *, schedule_timeout_seconds: float = 60.0) -> None:
        self.engine = engine
        self._schedule_timeout = schedule_timeout_seconds

    @property
    def address(self) -> str:
        return self.engine.address

    @property
    def engine_source(self) -> str:
        return self.engine.source

    def prepare_image(
        self, image: str, registry: Mapping[str, str] | None = None, *, now: bool = False
    ) -> RunImage:
        return RunImage(image)  # the node that runs the task pulls the image itself

    def image_env(self, image: RunImage) -> Mapping[str, str]:
        return self.engine.image_env(image.name)

    def image_metadata(self, image: RunImage) -> Mapping[str, Any]:
        return {}

    def open_channel(
        self, channel: PipesDockerChannel, *, image: RunImage, warn: Callable[[str], None]
    ) -> AbstractContextManager[OpenChannel]:
        return channel.open_without_engine(warn=warn, reason=_WHY_STREAMED)

    def create(self, spec: JobSpec) -> SwarmJob:
        native = ServiceSpec(
            image=spec.image.name,
            name=service_name(spec.name),
            command=shlex.split(spec.command) if isinstance(spec.command, str) else spec.command,
            env=spec.env,
            labels=spec.labels,
            configs=service_configs(spec.files),
            options=dict(spec.options),
            stop_grace_seconds=spec.stop_grace_seconds,
        )
        job = SwarmJob(self.engine, native, schedule_timeout=self._schedule_timeout)
        try:
            labels = {MANAGED_LABEL: "true", **native.labels, SERVICE_LABEL: native.name}
            for config in native.configs:
                job.config_ids.append(self.engine.create_config(config, labels))
            job.service_id = self.engine.create_service(native, job.config_ids)
        except BaseException:
            with deferred_signals():
                if not job.service_id:  # made, perhaps, before the answer was lost
                    job.service_id = self._made_as(native.name)
                job.remove()
            raise
        return job

    def _made_as(self, name: str) -> str:
        try:
            services = self.engine.list_services({MANAGED_LABEL: "true"})
        except PipesDockerError:
            return ""
        return next((service.id for service in services if service.name == name), "")

    def find(self, job_id: str) -> FoundJob | None:
        service = self.engine.service(job_id)
        if service is None:
            return None
        task = self.engine.task(job_id)
        if task is None:
            return None
        native = ServiceSpec(
            image=service.image, name=service.name, command=None, env={}, labels=service.labels
        )
        job = SwarmJob(self.engine, native, schedule_timeout=self._schedule_timeout)
        job.service_id, job.task_id = service.id, task.id
        job.config_ids = [
            config.id for config in self.engine.list_configs({SERVICE_LABEL: service.name})
        ]
        job.adopted = True
        running = not task.ended
        exit_code = None if running else (task.exit_code if task.exit_code is not None else -1)
        return FoundJob(job, service.image, service.labels, running, exit_code)

    def lease(self, found: FoundJob, labels: Mapping[str, str]) -> Callable[[], None]:
        service_id = found.job.target.id
        # A config, as nothing else on a Swarm carries labels without running; it holds the
        # adopted service's id (Swarm refuses an empty config).
        name = f"pipes-lease-{service_id[:12]}-{time.time_ns()}"
        config = ServiceConfig(name, service_id.encode(), "/lease")
        lease_id = self.engine.create_config(
            config, {**labels, MANAGED_LABEL: "true", LEASE_LABEL: service_id}
        )
        return lambda: self.engine.remove_config(lease_id)

    def owned(self, labels: Mapping[str, str]) -> Sequence[OwnedObject]:
        services = [
            OwnedObject(s.id, s.labels, s.created, name=s.name)
            for s in self.engine.list_services(labels)
        ]
        configs = [
            OwnedObject(c.id, c.labels, c.created, name=c.name, parent=c.labels.get(SERVICE_LABEL))
            for c in self.engine.list_configs(labels)
        ]
        return [*services, *configs]

    def remove_owned(self, owned: OwnedObject) -> None:
        if owned.id in {s.id for s in self.engine.list_services({MANAGED_LABEL: "true"})}:
            self.engine.remove_service(owned.id)
        else:
            self.engine.remove_config(owned.id)

    def check_copy_out(self) -> None:
        raise PipesDockerFilesError(_NO_FILES_OUT)


# Why a Swarm run cannot bring files back (the README says the same).
_NO_FILES_OUT = (
    "The Swarm client cannot copy files out of a job: its task's container lives on whichever"
    " node the manager picked, and a manager's API reaches only its own containers' files."
    " Have the job write its results where the orchestrator can read them (a volume or an"
    " object store) and report their location as Pipes metadata, or run it with"
    " PipesDockerClient against the node's engine."
)


class SwarmJob:
    """One service of one task: what this run made on the Swarm, and how far it got."""

    def __init__(self, engine: SwarmEngine, spec: ServiceSpec, *, schedule_timeout: float) -> None:
        self._engine = engine
        self._spec = spec
        self._schedule_timeout = schedule_timeout
        self.service_id = ""
        self.task_id = ""
        self.config_ids: list[str] = []
        self.adopted = False
        self.service_removed = False
        self.task_ended = False
        self._node = ""
        self._task: TaskStatus | None = None
        self._created = time.monotonic()
        self._poll = _FIRST_POLL_SECONDS
        self._deadline: float | None = None  # by when the teardown must be done
        self._teardown_thread: threading.Thread | None = None

    @property
    def target(self) -> RunTarget:
        return RunTarget("service", self.service_id, self._spec.name, self._node or None)

    def follow(self, stdout: ByteSink, stderr: ByteSink) -> OutputFollower:
        return LogFollower(self._engine, self.service_id, stdout, stderr, readable=self._readable)

    def _readable(self) -> bool:
        """Whether the service's logs can still be read whole (it ran to its end, still there)."""
        return self.task_ended and not self.service_removed

    def start(self) -> None:
        """Wait until the manager has the task running (or ended) on a node."""
        while True:
            task = self._look()
            if task is not None and (task.started or task.ended):
                return  # one that ended without starting: wait() says why
            waited = time.monotonic() - self._created
            if waited > self._schedule_timeout:
                raise self._not_started(task, waited=waited)
            self._nap()

    def wait(self, timeout: float) -> JobExit | None:
        deadline = time.monotonic() + timeout
        while True:
            task = self._look()
            if task is not None and task.ended:
                if task.state == "complete" or (task.state == "failed" and task.exit_code):
                    self.task_ended = True
                    return JobExit(
                        task.exit_code or 0, error=_unusual(task.error), finished_at=task.timestamp
                    )
                # Rejected by its node, failed before the job's process ran, shut down or
                # orphaned (its node was lost): the job has no exit code to report.
                raise self._not_started(task)
            if time.monotonic() + self._poll > deadline:
                return None
            self._nap()

    def _look(self) -> TaskStatus | None:
        task = self._engine.task(self.service_id)
        if task is None and self._task is not None:
            raise PipesDockerLaunchError(
                f"{self.target} (image {self._spec.image!r}) was removed by someone else while"
                f" its task was {self._task.state} (`docker service rm`, or another"
                " orchestrator's orphan sweep): the job's end is unknown.",
                image=self._spec.image,
                target=self.target,
            )
        if task is not None:
            self._task, self.task_id = task, task.id
            if task.node_id and not self._node:
                self._node = self._engine.node_name(task.node_id)
        return task

    def _nap(self) -> None:
        time.sleep(self._poll)
        self._poll = min(self._poll * 2, _MAX_POLL_SECONDS)

    def stop(self, grace_seconds: float) -> None:
        """Remove the service (SIGTERM, SIGKILL after its grace period) and its configs, and
        wait for its task to go: all within the grace period (the service's own, set when it
        was made) plus :data:`REMOVAL_MARGIN_SECONDS`, however slow the manager is (retried
        calls, a manager under load). What is not removed by then is left to the orphan sweep.

        Raises:
            PipesDockerError: A removal failed (before the bound was reached).
        """
        self._deadline = time.monotonic() + self._spec.stop_grace_seconds + REMOVAL_MARGIN_SECONDS
        self._bounded_teardown()

    def remove(self) -> None:
        """Remove the service (its task and container with it), then every config; bounded
        as :meth:`stop` is (by the same deadline after a stop).

        Raises:
            PipesDockerError: The first removal that failed, once all were tried.
        """
        if self._deadline is None:
            self._deadline = (
                time.monotonic() + self._spec.stop_grace_seconds + REMOVAL_MARGIN_SECONDS
            )
        self._bounded_teardown()

    def _bounded_teardown(self) -> None:
        """The teardown on a thread, waited for until the stop's deadline (or one more second
        for a call made after it, so that a quick removal is still tried)."""
        if self._teardown_thread is not None and self._teardown_thread.is_alive():
            return  # still going from before; its end was said already
        errors: list[BaseException] = []

        def teardown() -> None:
            try:
                self._teardown()
            except BaseException as exc:
                errors.append(exc)

        # A daemon: a removal the bound gave up on must not keep the process from exiting.
        self._teardown_thread = threading.Thread(
            target=teardown, name="pipes-docker-swarm-teardown", daemon=True
        )
        self._teardown_thread.start()
        assert self._deadline is not None
        self._teardown_thread.join(max(self._deadline - time.monotonic(), _LAST_CALL_SECONDS))
        if self._teardown_thread.is_alive():
            logger.warning(
                "Removing %s (image %r) was not done %.0f s after its stop began (its grace"
                " period plus %.0f s); the run ends now and leaves the rest to the orphan"
                " sweep (PipesDockerSwarmClient.remove_orphans()).",
                self.target,
                self._spec.image,
                self._spec.stop_grace_seconds + REMOVAL_MARGIN_SECONDS,
                REMOVAL_MARGIN_SECONDS,
            )
            return
        if errors:
            raise errors[0]

    def _teardown(self) -> None:
        errors: list[Exception] = []
        try:
            self._remove_service(wait=not self.task_ended)
        except Exception as exc:
            errors.append(exc)
        for config_id in list(self.config_ids):
            try:
                self._engine.remove_config(config_id)
                self.config_ids.remove(config_id)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def _remove_service(self, *, wait: bool) -> None:
        if not self.service_id or self.service_removed:
            return
        if not self.task_id:  # interrupted before the first look at the task
            with contextlib.suppress(PipesDockerError):
                task = self._engine.task(self.service_id)
                self.task_id = task.id if task is not None else ""
        self._engine.remove_service(self.service_id)
        self.service_removed = True
        if not wait or not self.task_id:
            # A task that ended has nothing left to stop: the manager deletes it, and its node
            # its container, on their own (within seconds).
            return
        deadline = self._deadline if self._deadline is not None else time.monotonic()
        while time.monotonic() < deadline and self._engine.task_by_id(self.task_id) is not None:
            time.sleep(0.1)

    def usage(self) -> ResourceSampler:
        return _NoUsage()

    def archive(self, path: str) -> OutputStream | None:
        raise PipesDockerFilesError(_NO_FILES_OUT)

    def metadata(self) -> Mapping[str, Any]:
        task = self._task
        return {
            "pipes_docker/service_id": self.service_id,
            "pipes_docker/service_name": self._spec.name,
            "pipes_docker/task_id": self.task_id,
            "pipes_docker/container_id": task.container_id if task else "",
            "pipes_docker/node": self._node,
            "pipes_docker/service_mode": self._engine.service_mode(),
        }

    def _not_started(
        self, task: TaskStatus | None, waited: float | None = None
    ) -> PipesDockerError:
        said = (task.error or task.message) if task else "no task was created"
        if waited is not None:
            reason = (
                f"The task of {self.target} (image {self._spec.image!r}) did not start within"
                f" {waited:.0f} s; it is {task.state if task else 'not made'}: {said}."
                " Check the placement constraints and resources in service_kwargs against the"
                " nodes (`docker node ls`), or raise schedule_timeout_seconds if pulling the"
                " image takes longer."
            )
        else:
            state = task.state if task else "unknown"
            reason = (
                f"The task of {self.target} (image {self._spec.image!r}) did not run to its"
                f" end: {said} (task state {state})."
            )
        if task is not None and "no such image" in said.lower():
            return PipesDockerImageError(
                f"{reason} Every node that may run the job needs the image: push it to a"
                " registry the nodes can pull from, or load it on each of them.",
                image=self._spec.image,
            )
        return PipesDockerLaunchError(reason, image=self._spec.image, target=self.target)


class _NoUsage:
    """A manager reports no resource use of a task's container (its node would)."""

    def stop(self) -> Mapping[str, int | float]:
        return {}


def _unusual(task_error: str | None) -> str | None:
    """The task's error, unless it only restates the exit code."""
    if task_error is None or task_error.startswith("task: non-zero exit"):
        return None
    return task_error
