"""DockerSwarmEngine: the Swarm seam (:class:`~pipes_docker.swarm.engine.SwarmEngine`)
implemented with docker-py, talking to a Swarm manager."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import docker
import docker.errors
import docker.types

from pipes_docker.backend import OutputStream
from pipes_docker.dockerapi import private
from pipes_docker.dockerapi.connection import (
    explain_api_error,
    is_transient_status,
)
from pipes_docker.dockerapi.images import ImageCalls
from pipes_docker.errors import PipesDockerEngineError, PipesDockerLaunchError
from pipes_docker.retry import retry_transient_engine_errors
from pipes_docker.swarm.engine import ServiceConfig, ServiceSpec, SwarmObject, TaskStatus

__all__ = ["DockerSwarmEngine"]

# Engine API 1.43 is Docker Engine 24: the first whose manager removes a replicated-job service's
# tasks with it. Before, they stayed behind, running or not (moby/moby#44312), so on older
# managers a job runs as a replicated service of one task that is never restarted: the same
# single run, cleaned up by the manager's usual task reaper.
_JOBS_CLEANED_UP_API = (1, 43)


class DockerSwarmEngine(ImageCalls):
    """A :class:`SwarmEngine` backed by docker-py, talking to a Swarm manager.

    Args:
        client: The docker-py client of a manager node. When ``None``, one is made from the
            environment on first use (``DOCKER_HOST``), as for
            :class:`~pipes_docker.dockerapi.containers.DockerEngine`.
    """

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        super().__init__(client)
        self._node_names: dict[str, str] = {}
        self._mode: str | None = None

    @retry_transient_engine_errors
    def service_mode(self) -> str:
        if self._mode is None:
            with self._connection.translate("asking the Swarm manager for its API version"):
                version = str(self._api.version().get("ApiVersion", "0.0"))
            major, _, minor = version.partition(".")
            try:
                api = (int(major), int(minor or 0))
            except ValueError:
                api = (0, 0)
            self._mode = "replicated-job" if api >= _JOBS_CLEANED_UP_API else "replicated"
        return self._mode

    @property
    def _api(self) -> Any:
        return self._connection.client.api

    @retry_transient_engine_errors
    def create_config(self, config: ServiceConfig, labels: Mapping[str, str]) -> str:
        with self._connection.translate(f"creating Swarm config {config.name!r}"):
            try:
                created = self._api.create_config(
                    config.name,
                    config.data,
                    labels=dict(labels),
                    templating={"name": "golang"} if config.templated else None,
                )
            except docker.errors.APIError as exc:
                self._refuse_a_non_manager(exc)
                if is_transient_status(exc):
                    raise
                if exc.status_code == 409:  # a retried create whose first attempt went through
                    return self._ours("configs", config.name, labels, exc)
                raise PipesDockerLaunchError(
                    f"The Swarm manager at {self.address} refused config {config.name!r}"
                    f" ({len(config.data)} bytes): {explain_api_error(exc)}. Is it a manager"
                    " node (`docker swarm init`), and on Engine API 1.41 or later?",
                    image=None,
                ) from exc
        return str(created["ID"])

    @retry_transient_engine_errors
    def create_service(self, spec: ServiceSpec, config_ids: Sequence[str]) -> str:
        references = [
            docker.types.ConfigReference(
                config_id, config.name, filename=config.target, mode=config.mode
            )
            for config_id, config in zip(config_ids, spec.configs, strict=True)
        ]
        options = dict(spec.options)
        keywords = {
            **options,
            "image": spec.image,
            "name": spec.name,
            "env": [f"{key}={value}" for key, value in spec.env.items()],
            "labels": dict(spec.labels),
            "container_labels": {**spec.labels, **(options.get("container_labels") or {})},
            "configs": [*(options.get("configs") or []), *references],
            "mode": docker.types.ServiceMode(self.service_mode(), replicas=1),
            "restart_policy": docker.types.RestartPolicy(condition="none"),
            "stop_grace_period": int(spec.stop_grace_seconds * 1e9),
        }
        if spec.command is not None:
            keywords["args"] = list(spec.command)
        keywords.setdefault("init", True)
        try:
            create_kwargs = private.service_create_arguments(keywords)
        except (TypeError, ValueError, docker.errors.DockerException) as exc:
            # An unknown keyword in service_kwargs, or a value docker-py cannot convert.
            raise PipesDockerLaunchError(
                f"Invalid service_kwargs for image {spec.image!r}: {exc}."
                " Check them against docker-py's services.create().",
                image=spec.image,
            ) from exc
        with self._connection.translate(f"creating a Swarm service from image {spec.image!r}"):
            try:
                # The low-level call: docker-py's services.create() inspects the new service
                # afterwards, a round trip a run does not need.
                created = self._api.create_service(**create_kwargs)
            except docker.errors.APIError as exc:
                self._refuse_a_non_manager(exc)
                if is_transient_status(exc):
                    raise
                if exc.status_code == 409:  # a retried create whose first attempt went through
                    return self._ours("services", spec.name, spec.labels, exc)
                raise PipesDockerLaunchError(
                    f"The Swarm manager at {self.address} refused service {spec.name!r} (image"
                    f" {spec.image!r}): {explain_api_error(exc)}",
                    image=spec.image,
                ) from exc
        return str(created["ID"])

    def _refuse_a_non_manager(self, exc: docker.errors.APIError) -> None:
        """A node outside a Swarm, or a worker, answers 503 for good: not worth retrying."""
        if "not a swarm manager" in explain_api_error(exc).lower():
            raise PipesDockerEngineError(
                f"The Docker engine at {self.address} is not a Swarm manager:"
                f" {explain_api_error(exc)} PipesDockerSwarmClient needs the engine of a manager"
                " node (docker_client, or DOCKER_HOST); PipesDockerClient runs jobs on a single"
                " engine.",
                transient=False,
            ) from exc

    def _ours(
        self, kind: str, name: str, labels: Mapping[str, str], conflict: docker.errors.APIError
    ) -> str:
        """The id of the service or config ``name`` when this run made it, else the conflict."""
        found = getattr(self._api, kind)(filters={"name": name})
        for item in found:
            spec = item.get("Spec") or {}
            if spec.get("Name") == name and dict(spec.get("Labels") or {}) == dict(labels):
                return str(item["ID"])
        raise PipesDockerLaunchError(
            f"A Swarm {kind[:-1]} named {name!r} already exists on {self.address} and is not"
            f" this run's: {explain_api_error(conflict)}",
            image=None,
        ) from conflict

    @retry_transient_engine_errors
    def task(self, service_id: str) -> TaskStatus | None:
        with self._connection.translate(f"reading the task of service {service_id[:12]}"):
            try:
                tasks = self._api.tasks(filters={"service": service_id})
            except docker.errors.NotFound:
                return None  # the service is gone
        if not tasks:
            return None
        return _task_status(max(tasks, key=lambda t: (t.get("Version") or {}).get("Index", 0)))

    @retry_transient_engine_errors
    def task_by_id(self, task_id: str) -> TaskStatus | None:
        with self._connection.translate(f"inspecting task {task_id[:12]}"):
            try:
                return _task_status(self._api.inspect_task(task_id))
            except docker.errors.NotFound:
                return None

    @retry_transient_engine_errors
    def logs(self, service_id: str, *, follow: bool) -> OutputStream:
        return self._connection.log_stream(
            "/services/{0}/logs",
            service_id,
            follow=follow,
            action=f"reading the logs of service {service_id[:12]}",
            refusal=f"The Swarm manager at {self.address} cannot give the logs of service"
            f" {service_id[:12]}",
        )

    def node_name(self, node_id: str) -> str:
        with self._lock:
            if node_id in self._node_names:
                return self._node_names[node_id]
        try:
            with self._connection.translate(f"inspecting node {node_id[:12]}"):
                node = self._api.inspect_node(node_id)
            name = str((node.get("Description") or {}).get("Hostname") or node_id)
        except Exception:
            return node_id
        with self._lock:
            self._node_names[node_id] = name
        return name

    @retry_transient_engine_errors
    def remove_service(self, service_id: str) -> None:
        with (
            self._connection.translate(f"removing service {service_id[:12]}"),
            contextlib.suppress(docker.errors.NotFound),
        ):
            self._api.remove_service(service_id)

    @retry_transient_engine_errors
    def remove_config(self, config_id: str) -> None:
        with (
            self._connection.translate(f"removing Swarm config {config_id[:12]}"),
            contextlib.suppress(docker.errors.NotFound),
        ):
            self._api.remove_config(config_id)

    @retry_transient_engine_errors
    def service(self, service_id: str) -> SwarmObject | None:
        with self._connection.translate(f"inspecting service {service_id[:12]}"):
            try:
                return _listed(self._api.inspect_service(service_id))
            except docker.errors.NotFound:
                return None

    def image_env(self, image: str) -> Mapping[str, str]:
        # The manager may not have the image at all: its nodes pull it themselves.
        return self.image_config_env(image) or {}

    @retry_transient_engine_errors
    def list_services(self, labels: Mapping[str, str]) -> Sequence[SwarmObject]:
        with self._connection.translate("listing services"):
            found = self._api.services(filters={"label": _label_filters(labels)})
        return [_listed(item) for item in found]

    @retry_transient_engine_errors
    def list_configs(self, labels: Mapping[str, str]) -> Sequence[SwarmObject]:
        with self._connection.translate("listing Swarm configs"):
            found = self._api.configs(filters={"label": _label_filters(labels)})
        return [_listed(item) for item in found]


def _label_filters(labels: Mapping[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in labels.items()]


def _listed(item: Mapping[str, Any]) -> SwarmObject:
    created = item.get("CreatedAt")
    spec = item.get("Spec") or {}
    return SwarmObject(
        id=str(item["ID"]),
        name=str((item.get("Spec") or {}).get("Name") or ""),
        labels=dict((item.get("Spec") or {}).get("Labels") or {}),
        created=_parse_time(created) if created else None,
        # A service's image, without the digest its manager pinned it to.
        image=str(
            ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image") or ""
        ).split("@sha256:")[0],
    )


def _parse_time(value: str) -> datetime | None:
    # The engine gives nanoseconds (2026-12-01T10:57:27.078477873Z); Python parses microseconds.
    head, dot, rest = value.rstrip("Z").partition(".")
    fraction = rest[:6] if dot else "0"
    try:
        return datetime.fromisoformat(f"{head}.{fraction:0<6}+00:00")
    except ValueError:
        return None


def _task_status(task: Mapping[str, Any]) -> TaskStatus:
    status = task.get("Status") or {}
    container = status.get("ContainerStatus") or {}
    exit_code = container.get("ExitCode")
    return TaskStatus(
        id=str(task["ID"]),
        state=str(status.get("State", "new")),
        message=str(status.get("Message", "")),
        error=status.get("Err") or None,
        node_id=str(task.get("NodeID") or ""),
        container_id=str(container.get("ContainerID") or ""),
        exit_code=int(exit_code) if exit_code is not None else None,
        timestamp=status.get("Timestamp"),
    )
