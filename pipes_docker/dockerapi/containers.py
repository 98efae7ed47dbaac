"""DockerEngine: the single-host seam (:class:`~pipes_docker.container.engine.ContainerEngine`)
implemented with docker-py."""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors
import docker.types
import requests.exceptions

from pipes_docker.backend import (
    ContainerFile,
    JobExit,
    Mount,
    OutputStream,
    ResourceSampler,
    RunTarget,
)
from pipes_docker.container.engine import (
    ContainerSpec,
    ContainerState,
    CreatedContainer,
    ListedContainer,
)
from pipes_docker.dockerapi import private
from pipes_docker.dockerapi.archives import tar_files, untar_one
from pipes_docker.dockerapi.connection import (
    explain_api_error,
    is_read_timeout,
    is_transient_status,
)
from pipes_docker.dockerapi.images import ImageCalls
from pipes_docker.dockerapi.stats import StatsSampler
from pipes_docker.dockerapi.streams import SocketStream
from pipes_docker.errors import (
    PipesDockerEngineError,
    PipesDockerError,
    PipesDockerImageError,
    PipesDockerLaunchError,
    PipesDockerMountSourceError,
)
from pipes_docker.retry import retry_transient_engine_errors

__all__ = ["DockerEngine"]

logger = logging.getLogger(__name__)


# How long a removal another call began may take before ours gives up waiting for it.
_REMOVAL_WAIT_SECONDS = 30.0


class DockerEngine(ImageCalls):
    """A :class:`~pipes_docker.container.engine.ContainerEngine` backed by docker-py.

    Args:
        client: The docker-py client to use. When ``None``, one is made from the environment
            (``DOCKER_HOST`` or the local socket) on first use and kept for later runs; making it
            lazily lets a code location load while the engine is down.
    """

    @retry_transient_engine_errors
    def image_env(self, image: str) -> Mapping[str, str]:
        env = self.image_config_env(image)
        if env is None:
            raise PipesDockerImageError(
                f"Image {image!r} was not found on the Docker engine at {self.address}.",
                image=image,
            )
        return env

    @retry_transient_engine_errors
    def create(self, spec: ContainerSpec) -> CreatedContainer:
        options = dict(spec.options)
        if spec.mounts:
            # The mounts API, not a `volumes` bind: an engine without the source path refuses
            # to create the container, where a bind would make an empty dir in its place.
            options["mounts"] = [*options.get("mounts", ()), *(_mount(m) for m in spec.mounts)]
        with self._connection.translate(f"creating a container from image {spec.image!r}"):
            try:
                # The low-level call: docker-py's containers.create() inspects the new container
                # afterwards, a round trip a run does not need.
                created = self.client.api.create_container(
                    **private.container_create_arguments(
                        {
                            "image": spec.image,
                            "command": spec.command,
                            "name": spec.name,
                            "environment": dict(spec.env),
                            "labels": dict(spec.labels),
                            "volumes": list(spec.volumes),
                            "detach": True,
                            "version": self.client.api.api_version,
                            **options,
                        }
                    )
                )
            except docker.errors.APIError as exc:
                if _is_missing_image(exc):
                    raise _image_missing(spec.image, self.address, exc) from exc
                if is_transient_status(exc):
                    raise  # translate() marks it transient; the retry policy tries again
                if _is_name_conflict(exc, spec.name):
                    # An earlier attempt did create it before its answer was lost.
                    return CreatedContainer(
                        id=self._ours(spec.name, spec.labels, spec.image), tty=_tty(spec)
                    )
                missing = _missing_mount_source(exc, spec.mounts)
                if missing is not None:
                    raise PipesDockerMountSourceError(
                        f"The Docker engine at {self.address} has no path {missing} to mount"
                        f" into a container from image {spec.image!r}: it does not see this"
                        f" process's files. {explain_api_error(exc)}",
                        image=spec.image,
                        host_path=missing,
                    ) from exc
                raise PipesDockerLaunchError(
                    f"Creating a container from image {spec.image!r} failed:"
                    f" {explain_api_error(exc)}",
                    image=spec.image,
                ) from exc
            except (TypeError, ValueError, docker.errors.DockerException) as exc:
                # docker-py checks keywords before sending them: an unknown one is a TypeError,
                # a bad value (mem_limit="lots", a bad port spec) a DockerException or ValueError.
                raise PipesDockerLaunchError(
                    f"Creating a container from image {spec.image!r} failed: {exc}."
                    " Check container_kwargs against docker-py's containers.create().",
                    image=spec.image,
                ) from exc
        return CreatedContainer(id=str(created["Id"]), tty=_tty(spec))

    def _ours(self, name: str, labels: Mapping[str, str], image: str) -> str:
        """The id of container ``name``, which an earlier attempt of this call made."""
        try:
            container = self.client.containers.get(name)
        except docker.errors.NotFound as exc:
            # The engine holds the name from the moment a create begins, and knows the
            # container only once it is made: the earlier attempt is still being created.
            raise PipesDockerEngineError(
                f"The Docker engine at {self.address} is still creating container {name!r}"
                f" (image {image!r}) for an earlier attempt whose answer was lost.",
                transient=True,
            ) from exc
        # The image's own labels join ours on the container.
        if any(container.labels.get(key) != value for key, value in labels.items()):
            raise PipesDockerLaunchError(
                f"A container named {name!r} already exists and is not this run's.",
                image=image,
                target=RunTarget("container", str(container.id), name),
            )
        return str(container.id)

    @retry_transient_engine_errors
    def copy_files(self, container_id: str, image: str, files: Sequence[ContainerFile]) -> None:
        archive = tar_files(files)
        with self._connection.translate(f"copying files into container {container_id[:12]}"):
            try:
                self.client.api.put_archive(container_id, "/", archive)
            except docker.errors.APIError as exc:
                if is_transient_status(exc):
                    raise
                paths = ", ".join(f.path for f in files)
                raise PipesDockerLaunchError(
                    f"Copying {paths} into container {container_id[:12]} failed:"
                    f" {explain_api_error(exc)}. A read-only root filesystem cannot take them.",
                    image=image,
                    target=RunTarget("container", container_id),
                ) from exc

    def probe_bind_mount(
        self, image: str, host_path: str, file_name: str, labels: Mapping[str, str]
    ) -> bytes | None:
        target = "/pipes-docker-probe"
        # Named, so that a retry whose earlier attempt made the container (its answer lost)
        # uses that one rather than leave it behind.
        name = f"pipes-probe-{secrets.token_hex(6)}"
        container_id = self._create_probe(image, host_path, target, name, labels)
        if container_id is None:
            return None
        try:
            return self._read_probe(container_id, f"{target}/{file_name}")
        finally:
            try:
                self.remove(container_id)
            except (PipesDockerError, docker.errors.APIError) as exc:
                # The answer stands; the orphan sweep removes the container once it is old.
                logger.warning("Could not remove probe container %s: %s", name, exc)

    @retry_transient_engine_errors
    def _create_probe(
        self, image: str, host_path: str, target: str, name: str, labels: Mapping[str, str]
    ) -> str | None:
        """A container of ``image`` named ``name`` with ``host_path`` mounted at ``target``;
        ``None`` when the engine has no such path."""
        # The engine's refusal is judged here, before translate() sees it: an engine may answer
        # a missing path with a server error, which translate() would take for a passing one.
        with self._connection.translate(f"probing whether the engine sees {host_path}"):
            try:
                return self._create_stopped(
                    image,
                    name,
                    labels,
                    mounts=[docker.types.Mount(target, host_path, type="bind", read_only=True)],
                )
            except docker.errors.APIError as exc:
                if _is_missing_bind_source(exc):
                    return None
                if _is_missing_image(exc):
                    raise _image_missing(image, self.address, exc) from exc
                raise

    @retry_transient_engine_errors
    def _read_probe(self, container_id: str, path: str) -> bytes | None:
        with self._connection.translate(f"reading {path} in probe container {container_id[:12]}"):
            try:
                chunks, _ = self.client.api.get_archive(container_id, path)
            except docker.errors.NotFound:
                return None
            return untar_one(b"".join(chunks))

    @retry_transient_engine_errors
    def attach(self, container_id: str) -> OutputStream:
        with self._connection.translate(f"attaching to container {container_id[:12]}"):
            raw = self.client.api.attach_socket(
                container_id, params={"stdout": 1, "stderr": 1, "stream": 1}
            )
        return SocketStream(raw)

    @retry_transient_engine_errors
    def start(self, container_id: str, image: str) -> None:
        with self._connection.translate(f"starting container {container_id[:12]}"):
            try:
                self.client.api.start(container_id)
            except docker.errors.APIError as exc:
                raise PipesDockerLaunchError(
                    f"Starting container {container_id[:12]} (image {image!r}) failed:"
                    f" {explain_api_error(exc)}",
                    image=image,
                    target=RunTarget("container", container_id),
                ) from exc

    @retry_transient_engine_errors
    def wait(self, container_id: str, timeout: float) -> JobExit | None:
        with self._connection.translate(f"waiting for container {container_id[:12]}"):
            try:
                result = self.client.api.wait(container_id, timeout=timeout)
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                if is_read_timeout(exc):
                    return None
                raise
            exit_code = int(result.get("StatusCode", -1))
            error = (result.get("Error") or {}).get("Message") or None
            try:
                attrs = self.client.api.inspect_container(container_id)
            except docker.errors.NotFound:
                attrs = {"State": {"Status": "removed"}}
            state = attrs.get("State", {})
            oom_killed = bool(state.get("OOMKilled"))
            memory_limit = attrs.get("HostConfig", {}).get("Memory") or None
            if exit_code != 0 and state.get("Status") in ("removed", "removing", "dead"):
                error = "the container was removed by someone else while it ran"
        return JobExit(
            exit_code,
            oom_killed,
            memory_limit,
            error,
            started_at=_timestamp(state.get("StartedAt")),
            finished_at=_timestamp(state.get("FinishedAt")),
        )

    @retry_transient_engine_errors
    def stop(self, container_id: str, grace_seconds: float) -> None:
        with (
            self._connection.translate(f"stopping container {container_id[:12]}"),
            contextlib.suppress(docker.errors.NotFound),
        ):
            self.client.api.stop(container_id, timeout=max(0, round(grace_seconds)))

    @retry_transient_engine_errors
    def remove(self, container_id: str) -> None:
        """Remove the container; return once it is gone, whoever removes it."""
        deadline = time.monotonic() + _REMOVAL_WAIT_SECONDS
        with self._connection.translate(f"removing container {container_id[:12]}"):
            while True:
                try:
                    self.client.api.remove_container(container_id, force=True, v=True)
                    return
                except docker.errors.NotFound:
                    return
                except docker.errors.APIError as exc:
                    if not (exc.status_code == 409 and "in progress" in str(exc)):
                        raise
                    # Another remove (an earlier attempt of ours whose answer was lost,
                    # auto_remove) is under way: the container is gone when it ends, or, if it
                    # failed, left dead for this one to remove.
                    if time.monotonic() >= deadline:
                        raise PipesDockerEngineError(
                            f"The Docker engine at {self.address} was still removing container"
                            f" {container_id[:12]} after {_REMOVAL_WAIT_SECONDS:.0f} s.",
                            transient=False,
                        ) from exc
                    time.sleep(0.1)

    @retry_transient_engine_errors
    def list_containers(self, labels: Mapping[str, str]) -> Sequence[ListedContainer]:
        filters = [f"{key}={value}" for key, value in labels.items()]
        with self._connection.translate("listing containers"):
            found = self.client.api.containers(all=True, filters={"label": filters})
        return [_listed(item) for item in found]

    @retry_transient_engine_errors
    def container_state(self, container_id: str) -> ContainerState | None:
        with self._connection.translate(f"inspecting container {container_id[:12]}"):
            try:
                attrs = self.client.api.inspect_container(container_id)
            except docker.errors.NotFound:
                return None
        state = attrs.get("State") or {}
        running = bool(state.get("Running"))
        if state.get("Status") in ("removing", "dead"):
            return None
        return ContainerState(
            id=str(attrs["Id"]),
            name=str(attrs.get("Name", "")).lstrip("/"),
            image=str((attrs.get("Config") or {}).get("Image", "")),
            running=running,
            # One that never started did not end well: a restart removes it and runs afresh.
            exit_code=None
            if running
            else (-1 if state.get("Status") == "created" else int(state.get("ExitCode", -1))),
            tty=bool((attrs.get("Config") or {}).get("Tty")),
            labels=dict((attrs.get("Config") or {}).get("Labels") or {}),
        )

    def usage(self, container_id: str) -> ResourceSampler:
        return StatsSampler(self.client.api, container_id)

    @retry_transient_engine_errors
    def output_from_start(self, container_id: str) -> OutputStream:
        return self._connection.log_stream(
            "/containers/{0}/logs",
            container_id,
            follow=True,
            action=f"reading the logs of container {container_id[:12]}",
            refusal=f"The engine at {self.address} cannot replay the output of container"
            f" {container_id[:12]}",
        )

    @retry_transient_engine_errors
    def get_archive(self, container_id: str, path: str) -> OutputStream | None:
        with self._connection.translate(f"copying {path} out of container {container_id[:12]}"):
            try:
                chunks, _ = self.client.api.get_archive(container_id, path)
            except docker.errors.NotFound:
                return None
        return _ChunkStream(chunks)

    def create_lease(self, container_id: str, image: str, labels: Mapping[str, str]) -> str:
        # Named, as the probe is: a retry whose earlier attempt made the lease uses that one.
        name = f"pipes-lease-{container_id[:12]}-{secrets.token_hex(4)}"
        return self._create_lease(container_id, image, labels, name)

    @retry_transient_engine_errors
    def _create_lease(
        self, container_id: str, image: str, labels: Mapping[str, str], name: str
    ) -> str:
        with self._connection.translate(f"marking container {container_id[:12]} as adopted"):
            return self._create_stopped(image, name, labels)

    def _create_stopped(
        self, image: str, name: str, labels: Mapping[str, str], **host_config: Any
    ) -> str:
        """The id of a container of ``image`` that is never started (a probe, a lease), made
        now or by an earlier attempt of the same call whose answer was lost."""
        try:
            created = self.client.api.create_container(
                image,
                command=["true"],
                name=name,
                labels=dict(labels),
                host_config=self.client.api.create_host_config(network_mode="none", **host_config),
            )
        except docker.errors.APIError as exc:
            if not _is_name_conflict(exc, name):
                raise
            return self._ours(name, labels, image)
        return str(created["Id"])


class _ChunkStream:
    """docker-py's chunk generator of a streamed response, read as an OutputStream."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def read(self, size: int) -> bytes:
        return next(self._chunks, b"")

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def _is_name_conflict(exc: docker.errors.APIError, name: str) -> bool:
    return exc.status_code == 409 and name in explain_api_error(exc)


def _is_missing_image(exc: docker.errors.APIError) -> bool:
    # docker-py knows Docker's wording only; Podman says "no such image: ...: image not known".
    if isinstance(exc, docker.errors.ImageNotFound):
        return True
    said = explain_api_error(exc).lower()
    return exc.status_code == 404 and ("no such image" in said or "image not known" in said)


def _image_missing(image: str, address: str, exc: docker.errors.APIError) -> PipesDockerImageError:
    return PipesDockerImageError(
        f"Image {image!r} was not found on the Docker engine at {address}:"
        f" {explain_api_error(exc)}. Build or pull it first, or use"
        " pull_policy='if_not_present'.",
        image=image,
        missing=True,
    )


def _is_missing_bind_source(exc: docker.errors.APIError) -> bool:
    # Docker: 400 'invalid mount config for type "bind": bind source path does not exist'.
    # Podman: 'statfs ...: no such file or directory'.
    text = explain_api_error(exc).lower()
    return "does not exist" in text or "no such file or directory" in text


def _timestamp(value: Any) -> str | None:
    """The engine's RFC 3339 time, or None for its zero time (never started or finished)."""
    if not value or str(value).startswith("0001-01-01"):
        return None
    return str(value)


def _tty(spec: ContainerSpec) -> bool:
    return bool(spec.options.get("tty"))


def _mount(mount: Mount) -> docker.types.Mount:
    return docker.types.Mount(
        mount.container_path, mount.host_path, type="bind", read_only=mount.read_only
    )


def _missing_mount_source(exc: docker.errors.APIError, mounts: Sequence[Mount]) -> str | None:
    """The source of ``mounts`` that the engine's refusal names as missing, if any."""
    if not _is_missing_bind_source(exc):
        return None
    text = explain_api_error(exc)
    return next((m.host_path for m in mounts if m.host_path in text), None)


def _listed(item: Mapping[str, Any]) -> ListedContainer:
    return ListedContainer(
        id=str(item["Id"]),
        labels=dict(item.get("Labels") or {}),
        created=datetime.fromtimestamp(int(item.get("Created", 0)), UTC),
        name=str((item.get("Names") or [""])[0]).lstrip("/"),
    )
