"""The one place that talks to docker-py.

:class:`ContainerEngine` is the seam: plain values in, plain values out, and errors already
translated into pipes-docker's own. :class:`DockerEngine` implements it with a
``docker.DockerClient``; unit tests use an in-memory fake.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import tarfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import docker
import docker.errors
import docker.types
import requests.exceptions
import urllib3.exceptions
from docker.models.containers import _create_container_args

from pipes_docker.errors import (
    PipesDockerEngineError,
    PipesDockerError,
    PipesDockerImageError,
    PipesDockerLaunchError,
    PipesDockerMountSourceError,
)
from pipes_docker.retry import retry_transient_engine_errors

logger = logging.getLogger(__name__)

__all__ = [
    "ContainerEngine",
    "ContainerExit",
    "ContainerFile",
    "ContainerSpec",
    "ContainerState",
    "CreatedContainer",
    "DockerEngine",
    "Mount",
    "OutputStream",
    "ResourceSampler",
    "ResponseStream",
    "explain_api_error",
    "is_transient_status",
]


@dataclass(frozen=True)
class Mount:
    """A host path the container sees at ``container_path``."""

    host_path: str
    container_path: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerFile:
    """A file copied into the container after it is created and before it starts.

    Works on every engine, shared filesystem or not. Parent directories are created as needed,
    world-readable, owned by root.
    """

    path: str
    data: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one container, already merged and validated.

    ``options`` are further docker-py ``containers.create`` keywords (user, mem_limit,
    network_mode, ...) that pipes-docker passes through untouched.
    """

    image: str
    name: str
    command: str | Sequence[str] | None
    env: Mapping[str, str]
    labels: Mapping[str, str]
    mounts: Sequence[Mount] = ()
    volumes: Sequence[str] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    files: Sequence[ContainerFile] = ()


@dataclass(frozen=True)
class CreatedContainer:
    id: str
    tty: bool


@dataclass(frozen=True)
class ContainerExit:
    """How a container ended."""

    exit_code: int
    oom_killed: bool = False
    memory_limit: int | None = None
    error: str | None = None
    started_at: str | None = None  # the engine's timestamps, RFC 3339
    finished_at: str | None = None


@dataclass(frozen=True)
class ContainerState:
    """What the engine says about an existing container."""

    id: str
    name: str
    image: str
    running: bool
    exit_code: int | None  # None while it runs
    tty: bool
    labels: Mapping[str, str] = field(default_factory=dict)


class ResourceSampler(Protocol):
    """Samples a container's resource use while it runs."""

    def stop(self) -> Mapping[str, int | float]:
        """Stop sampling; the figures the engine reported (those it did not are left out)."""
        ...


class OutputStream(Protocol):
    """A byte stream read in chunks; ``read`` returns ``b""`` at the end."""

    def read(self, size: int) -> bytes: ...

    def close(self) -> None: ...


class ContainerEngine(Protocol):
    """The container operations pipes-docker needs, in plain values."""

    @property
    def address(self) -> str:
        """Where the engine is, for error messages."""
        ...

    def image_id(self, image: str) -> str | None:
        """The id of ``image`` on the engine, or ``None`` when it is not there."""
        ...

    def image_digests(self, image_id: str) -> Sequence[str]:
        """The registry digests (``repo@sha256:...``) of an image seen by ``image_id``; empty
        for an image built or loaded locally."""
        ...

    def usage(self, container_id: str) -> ResourceSampler:
        """Start sampling the running container's resource use (the engine's stats stream)."""
        ...

    def image_env(self, image: str) -> Mapping[str, str]:
        """The environment the image's config sets (its Dockerfile ``ENV`` lines)."""
        ...

    def pull(self, image: str, auth: Mapping[str, str] | None) -> None: ...

    def create(self, spec: ContainerSpec) -> CreatedContainer: ...

    def copy_files(self, container_id: str, image: str, files: Sequence[ContainerFile]) -> None:
        """Copy ``files`` into a created container, before it starts."""
        ...

    def probe_bind_mount(self, image: str, host_path: str, file_name: str) -> bytes | None:
        """Read ``host_path/file_name`` as the engine sees it through a bind mount.

        Creates (never starts) a container from ``image`` that bind-mounts ``host_path``, reads
        the file through it and removes the container. Returns ``None`` when the engine's host
        has no such path: the engine does not share the caller's filesystem there.
        """
        ...

    def attach(self, container_id: str) -> OutputStream: ...

    def start(self, container_id: str, image: str) -> None: ...

    def wait(self, container_id: str, timeout: float) -> ContainerExit | None:
        """The container's exit, or ``None`` if it is still running after ``timeout`` seconds."""
        ...

    def stop(self, container_id: str, grace_seconds: float) -> None: ...

    def remove(self, container_id: str) -> None: ...

    def list_containers(self, labels: Mapping[str, str]) -> Sequence[Mapping[str, Any]]: ...

    def container_state(self, container_id: str) -> ContainerState | None:
        """The container's state, or ``None`` when there is no such container."""
        ...

    def output_from_start(self, container_id: str) -> OutputStream:
        """Everything the container wrote, from its start, then what it writes until it ends.

        Read through the logs API, so only for containers whose log driver keeps the output;
        framed like the attach stream (stdout and stderr apart) unless the container has a TTY.

        Raises:
            PipesDockerEngineError: The engine cannot replay this container's output.
        """
        ...

    def create_lease(self, container_id: str, image: str, labels: Mapping[str, str]) -> str:
        """Create (never start) a marker container saying who now owns ``container_id``."""
        ...


class DockerEngine:
    """A :class:`ContainerEngine` backed by docker-py.

    Args:
        client: The docker-py client to use. When ``None``, one is made from the environment
            (``DOCKER_HOST`` or the local socket) on first use and kept for later runs; making it
            lazily lets a code location load while the engine is down.
    """

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._digests: dict[str, list[str]] = {}

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    try:
                        self._client = _client_from_env()
                    except docker.errors.DockerException as exc:
                        raise PipesDockerEngineError(
                            f"Cannot reach the Docker engine at {_env_address()}: {exc}."
                            " Is the daemon running, and does DOCKER_HOST point at it?",
                            transient=True,
                        ) from exc
        return self._client

    @property
    def address(self) -> str:
        """Where the engine is, without credentials: ``unix:///...``, ``tcp://...``, ``ssh://...``."""
        if self._client is None:
            return _without_credentials(_env_address())
        api = self._client.api
        base_url = str(api.base_url)
        try:
            adapter = api.get_adapter(base_url)
        except Exception:
            adapter = None
        if getattr(adapter, "socket_path", None):
            return f"unix://{adapter.socket_path}"
        if getattr(adapter, "ssh_host", None):
            return _without_credentials(f"ssh://{adapter.ssh_host}")
        return _without_credentials(
            base_url.replace("https://", "tcp://").replace("http://", "tcp://")
        )

    @retry_transient_engine_errors
    def image_id(self, image: str) -> str | None:
        with self.translate(f"inspecting image {image!r}"):
            try:
                attrs = self.client.api.inspect_image(image)
            except docker.errors.ImageNotFound:
                return None
        with self._lock:
            self._digests[str(attrs["Id"])] = list(attrs.get("RepoDigests") or [])
        return str(attrs["Id"])

    def image_digests(self, image_id: str) -> Sequence[str]:
        # Read from the inspect image_id() made for this run: no round trip of its own.
        with self._lock:
            return list(self._digests.get(image_id, ()))

    @retry_transient_engine_errors
    def image_env(self, image: str) -> Mapping[str, str]:
        with self.translate(f"inspecting image {image!r}"):
            try:
                attrs = self.client.api.inspect_image(image)
            except docker.errors.ImageNotFound as exc:
                raise PipesDockerImageError(
                    f"Image {image!r} was not found on the Docker engine at {self.address}.",
                    image=image,
                ) from exc
        pairs = (item.partition("=") for item in (attrs.get("Config") or {}).get("Env") or [])
        return {key: value for key, _, value in pairs}

    @retry_transient_engine_errors
    def pull(self, image: str, auth: Mapping[str, str] | None) -> None:
        repository, tag = _split_reference(image)
        with self.translate(f"pulling image {image!r}"):
            try:
                events = self.client.api.pull(
                    repository, tag=tag, stream=True, decode=True, auth_config=auth or None
                )
                # The engine reports most pull failures inside the stream with a 200 status.
                # Read it to its end even after an error, so the connection is released.
                failure = None
                for event in events:
                    if "error" in event and failure is None:
                        failure = event.get("errorDetail", {}).get("message") or event["error"]
                if failure is not None:
                    raise PipesDockerImageError(
                        f"Pulling image {image!r} from {self.address} failed: {failure}",
                        image=image,
                    )
            except docker.errors.APIError as exc:
                # The engine answers 500 when the registry refuses (bad credentials, unknown
                # manifest): retrying would only resend a bad password. Only rate limits and
                # gateway failures are worth another try.
                if _is_pull_rate_limit(exc):
                    raise
                raise PipesDockerImageError(
                    f"Pulling image {image!r} failed: {explain_api_error(exc)}", image=image
                ) from exc

    @retry_transient_engine_errors
    def create(self, spec: ContainerSpec) -> CreatedContainer:
        options = dict(spec.options)
        if spec.mounts:
            # The mounts API, not a `volumes` bind: an engine without the source path refuses
            # to create the container, where a bind would make an empty dir in its place.
            options["mounts"] = [*options.get("mounts", ()), *(_mount(m) for m in spec.mounts)]
        with self.translate(f"creating a container from image {spec.image!r}"):
            try:
                # The low-level call: docker-py's containers.create() inspects the new container
                # afterwards, a round trip a run does not need.
                created = self.client.api.create_container(
                    **_create_container_args(
                        {
                            "image": spec.image,
                            "command": spec.command,
                            "name": spec.name,
                            "environment": dict(spec.env),
                            "labels": dict(spec.labels),
                            "volumes": list(spec.volumes),
                            "detach": True,
                            "version": self.client.api._version,
                            **options,
                        }
                    )
                )
            except docker.errors.ImageNotFound as exc:
                raise PipesDockerImageError(
                    f"Image {spec.image!r} was not found on the Docker engine at {self.address}:"
                    f" {explain_api_error(exc)}. Build or pull it first,"
                    " or use pull_policy='if_not_present'.",
                    image=spec.image,
                ) from exc
            except docker.errors.APIError as exc:
                if is_transient_status(exc):
                    raise  # _translate marks it transient; the retry policy tries again
                if exc.status_code == 409 and spec.name in explain_api_error(exc):
                    # An earlier attempt did create it before its answer was lost.
                    return CreatedContainer(id=self._adopt(spec), tty=_tty(spec))
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
                    container_id=None,
                ) from exc
            except TypeError as exc:  # docker-py rejects unknown create keywords this way
                raise PipesDockerLaunchError(
                    f"Creating a container from image {spec.image!r} failed: {exc}."
                    " Check container_kwargs against docker-py's containers.create().",
                    image=spec.image,
                    container_id=None,
                ) from exc
        return CreatedContainer(id=str(created["Id"]), tty=_tty(spec))

    def _adopt(self, spec: ContainerSpec) -> str:
        container = self.client.containers.get(spec.name)
        if container.labels != dict(spec.labels):
            raise PipesDockerLaunchError(
                f"A container named {spec.name!r} already exists and is not this run's.",
                image=spec.image,
                container_id=container.id,
            )
        return str(container.id)

    @retry_transient_engine_errors
    def copy_files(self, container_id: str, image: str, files: Sequence[ContainerFile]) -> None:
        archive = _tar(files)
        with self.translate(f"copying files into container {container_id[:12]}"):
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
                    container_id=container_id,
                ) from exc

    @retry_transient_engine_errors
    def probe_bind_mount(self, image: str, host_path: str, file_name: str) -> bytes | None:
        target = "/pipes-docker-probe"
        with self.translate(f"probing whether the engine sees {host_path}"):
            try:
                created = self.client.api.create_container(
                    image,
                    command=["true"],
                    labels={"io.pipes-docker.managed": "true", "io.pipes-docker.probe": "true"},
                    host_config=self.client.api.create_host_config(
                        mounts=[docker.types.Mount(target, host_path, type="bind", read_only=True)],
                        network_mode="none",
                    ),
                )
            except docker.errors.APIError as exc:
                if _is_missing_bind_source(exc):
                    return None
                raise
            container_id = created["Id"]
            try:
                try:
                    chunks, _ = self.client.api.get_archive(container_id, f"{target}/{file_name}")
                except docker.errors.NotFound:
                    return None
                return _untar_one(b"".join(chunks))
            finally:
                with contextlib.suppress(docker.errors.APIError):
                    self.client.api.remove_container(container_id, force=True, v=True)

    @retry_transient_engine_errors
    def attach(self, container_id: str) -> OutputStream:
        with self.translate(f"attaching to container {container_id[:12]}"):
            raw = self.client.api.attach_socket(
                container_id, params={"stdout": 1, "stderr": 1, "stream": 1}
            )
        return _SocketStream(raw)

    @retry_transient_engine_errors
    def start(self, container_id: str, image: str) -> None:
        with self.translate(f"starting container {container_id[:12]}"):
            try:
                self.client.api.start(container_id)
            except docker.errors.APIError as exc:
                raise PipesDockerLaunchError(
                    f"Starting container {container_id[:12]} (image {image!r}) failed:"
                    f" {explain_api_error(exc)}",
                    image=image,
                    container_id=container_id,
                ) from exc

    @retry_transient_engine_errors
    def wait(self, container_id: str, timeout: float) -> ContainerExit | None:
        with self.translate(f"waiting for container {container_id[:12]}"):
            try:
                result = self.client.api.wait(container_id, timeout=timeout)
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                if _is_read_timeout(exc):
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
        return ContainerExit(
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
            self.translate(f"stopping container {container_id[:12]}"),
            contextlib.suppress(docker.errors.NotFound),
        ):
            self.client.api.stop(container_id, timeout=max(0, round(grace_seconds)))

    @retry_transient_engine_errors
    def remove(self, container_id: str) -> None:
        with self.translate(f"removing container {container_id[:12]}"):
            try:
                self.client.api.remove_container(container_id, force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code == 409 and "in progress" in str(exc):
                    return  # another remove (ours or auto_remove) got there first
                raise

    @retry_transient_engine_errors
    def list_containers(self, labels: Mapping[str, str]) -> Sequence[Mapping[str, Any]]:
        filters = [f"{key}={value}" for key, value in labels.items()]
        with self.translate("listing containers"):
            found: list[Mapping[str, Any]] = self.client.api.containers(
                all=True, filters={"label": filters}
            )
        return found

    @retry_transient_engine_errors
    def container_state(self, container_id: str) -> ContainerState | None:
        with self.translate(f"inspecting container {container_id[:12]}"):
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
            exit_code=None if running else int(state.get("ExitCode", -1)),
            tty=bool((attrs.get("Config") or {}).get("Tty")),
            labels=dict((attrs.get("Config") or {}).get("Labels") or {}),
        )

    def usage(self, container_id: str) -> ResourceSampler:
        return _StatsSampler(self.client.api, container_id)

    @retry_transient_engine_errors
    def output_from_start(self, container_id: str) -> OutputStream:
        return self.log_stream(
            "/containers/{0}/logs",
            container_id,
            follow=True,
            action=f"reading the logs of container {container_id[:12]}",
            refusal=f"The engine at {self.address} cannot replay the output of container"
            f" {container_id[:12]}",
        )

    def log_stream(
        self, path: str, object_id: str, *, follow: bool, action: str, refusal: str
    ) -> ResponseStream:
        """A logs endpoint (a container's, a service's) from the start, framed, unparsed.

        docker-py's own logs calls drop which stream a frame came from; this reads the raw
        response, for the demuxer.
        """
        api = self.client.api
        with self.translate(action):
            response = api._get(
                api._url(path, object_id),
                params={"stdout": 1, "stderr": 1, "follow": int(follow)},
                stream=True,
                # Followed, a job may be silent for longer than any read timeout.
                timeout=None if follow else api.timeout,
            )
            try:
                api._raise_for_status(response)
            except docker.errors.APIError as exc:
                response.close()
                raise PipesDockerEngineError(f"{refusal}: {explain_api_error(exc)}") from exc
        return ResponseStream(response)

    @retry_transient_engine_errors
    def create_lease(self, container_id: str, image: str, labels: Mapping[str, str]) -> str:
        with self.translate(f"marking container {container_id[:12]} as adopted"):
            created = self.client.api.create_container(
                image,
                command=["true"],
                labels=dict(labels),
                host_config=self.client.api.create_host_config(network_mode="none"),
            )
        return str(created["Id"])

    def translate(self, action: str) -> _Translate:
        return _Translate(self, action)


class _Translate:
    """Turns transport failures into a :class:`PipesDockerEngineError` naming the engine."""

    def __init__(self, engine: DockerEngine, action: str) -> None:
        self._engine = engine
        self._action = action

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None or isinstance(exc, PipesDockerError):
            return
        if isinstance(
            exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout
        ) or _is_ssh_transport_failure(exc):
            raise PipesDockerEngineError(
                f"Cannot reach the Docker engine at {self._engine.address} while {self._action}:"
                f" {exc}. Is the daemon running, and does DOCKER_HOST point at it?",
                transient=True,
            ) from exc
        if isinstance(exc, docker.errors.APIError) and is_transient_status(exc):
            raise PipesDockerEngineError(
                f"The Docker engine at {self._engine.address} failed while {self._action}:"
                f" {explain_api_error(exc)}",
                transient=True,
            ) from exc


class _SocketStream:
    """The raw attach connection, read in large chunks.

    docker-py hands back whatever its transport has: a socket (unix, tcp), a ``SocketIO``
    wrapper around one, an SSL socket (TLS) or a paramiko ``Channel`` (ssh), which has ``recv``
    but no ``read``. Any read timeout left on the connection is lifted: a job may be silent for
    longer than the client's request timeout.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._sock: Any = raw if hasattr(raw, "recv") else getattr(raw, "_sock", None)
        for conn in (raw, self._sock):
            settimeout = getattr(conn, "settimeout", None)
            if settimeout is not None:
                settimeout(None)

    def read(self, size: int) -> bytes:
        if hasattr(self._raw, "recv"):
            data: bytes | None = self._raw.recv(size)
        else:
            data = self._raw.read(size)
        return data or b""

    def close(self) -> None:
        # shutdown() wakes a reader blocked in another thread; closing the SocketIO wrapper alone
        # would leave the real socket open.
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError, EOFError):
                sock.shutdown(socket.SHUT_RDWR)
        for closable in (self._raw, sock):
            if closable is not None:
                with contextlib.suppress(OSError, EOFError):
                    closable.close()


class _StatsSampler:
    """Reads the engine's stats stream (one sample a second, pushed by the engine) on a thread.

    One connection and a JSON document a second: nothing a run would notice. Peak memory is the
    cgroup's own high-water mark where the engine reports one (cgroup v1), else the highest
    sample; CPU seconds and block I/O bytes are the engine's running totals at the last sample.
    A job shorter than the first sample reports none of them.
    """

    def __init__(self, api: Any, container_id: str) -> None:
        self._api = api
        self._container_id = container_id
        self._figures: dict[str, int | float] = {}
        self._response: Any = None
        self._closing = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._sample, name="pipes-docker-stats", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        try:
            response = self._api._get(
                self._api._url("/containers/{0}/stats", self._container_id),
                params={"stream": True},
                stream=True,
            )
            with self._lock:
                self._response = response
                if self._closing:
                    return
            for sample in self._api._stream_helper(response, decode=True):
                self._take(sample)
        except Exception:  # stats are a nicety: a run never fails for want of them
            logger.debug("Stats of %s unavailable", self._container_id[:12], exc_info=True)
        finally:
            self._close_response()

    def _take(self, sample: Mapping[str, Any]) -> None:
        memory = sample.get("memory_stats") or {}
        peak = memory.get("max_usage") or memory.get("usage")
        figures = dict(self._figures)
        if peak:
            figures["peak_memory_bytes"] = max(int(peak), int(figures.get("peak_memory_bytes", 0)))
        cpu_ns = ((sample.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
        if cpu_ns:
            figures["cpu_seconds"] = round(int(cpu_ns) / 1e9, 3)
        io_entries = (sample.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
        for op, key in (("read", "read_bytes"), ("write", "write_bytes")):
            values = [int(e.get("value", 0)) for e in io_entries if str(e.get("op")).lower() == op]
            if values:
                figures[key] = max(sum(values), int(figures.get(key, 0)))
        self._figures = figures

    def _close_response(self) -> None:
        with self._lock:
            self._closing = True
            response, self._response = self._response, None
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()

    def stop(self) -> Mapping[str, int | float]:
        # Neither join nor close here: until its first sample (about a second after start) the
        # engine has not answered, and closing a response another thread reads blocks until the
        # next sample. Shutting the socket down wakes that thread, which closes it and ends.
        with self._lock:
            self._closing = True
            response = self._response
        if response is not None:
            _shutdown(response)
        return dict(self._figures)


class ResponseStream:
    """A streamed HTTP response (the logs API), read as it arrives, chunked encoding undone."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def read(self, size: int) -> bytes:
        data: bytes = self._response.raw.read1(size)
        return data

    def close(self) -> None:
        _shutdown(self._response)
        with contextlib.suppress(Exception):
            self._response.close()


def _shutdown(response: Any) -> None:
    """Shut down a streamed response's socket: wakes a thread blocked reading it."""
    raw = getattr(response, "raw", None)
    sock = getattr(getattr(getattr(raw, "_fp", None), "fp", None), "raw", None)
    sock = getattr(sock, "_sock", sock)
    if sock is not None and hasattr(sock, "shutdown"):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _tar(files: Sequence[ContainerFile]) -> bytes:
    """A tar of ``files`` with their parent directories, to be extracted at ``/``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        directories: set[str] = set()
        for file in files:
            parts = file.path.strip("/").split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in directories:
                    directories.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    archive.addfile(info)
            info = tarfile.TarInfo("/".join(parts))
            info.size, info.mode = len(file.data), file.mode
            archive.addfile(info, io.BytesIO(file.data))
    return buffer.getvalue()


def _untar_one(data: bytes) -> bytes | None:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive:
            if member.isfile():
                extracted = archive.extractfile(member)
                return extracted.read() if extracted is not None else None
    return None


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


def _is_pull_rate_limit(exc: docker.errors.APIError) -> bool:
    gateway = exc.status_code in (429, 502, 503, 504)
    return gateway or "toomanyrequests" in explain_api_error(exc).lower()


def is_transient_status(exc: docker.errors.APIError) -> bool:
    return bool(exc.is_server_error() or exc.status_code == 429)


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


def _split_reference(image: str) -> tuple[str, str]:
    """Split ``repo[:tag][@digest]`` into docker-py's (repository, tag) for a pull."""
    if "@" in image:
        repository, digest = image.split("@", 1)
        return repository, digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :]
    return image, "latest"


def explain_api_error(exc: docker.errors.APIError) -> str:
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", errors="replace")
    return str(explanation or exc)


def _is_ssh_transport_failure(exc: BaseException) -> bool:
    """A failure of docker-py's ssh transport (paramiko), e.g. sshd refusing a channel for a
    moment under load: the engine could not be reached, which may pass."""
    return type(exc).__module__.startswith("paramiko.")


def _is_read_timeout(exc: BaseException) -> bool:
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return True
    reason: BaseException | None = exc
    while reason is not None:
        if isinstance(reason, urllib3.exceptions.ReadTimeoutError | socket.timeout):
            return True
        args = getattr(reason, "args", ())
        nested = args[0] if args and isinstance(args[0], BaseException) else None
        reason = nested or reason.__cause__ or reason.__context__
        if reason is exc:
            break
    return False


def _client_from_env() -> docker.DockerClient:
    """``docker.from_env()``, with the TLS trap of requests closed.

    With ``DOCKER_TLS_VERIFY`` docker-py verifies the engine against ``DOCKER_CERT_PATH/ca.pem``
    by setting it on its HTTP session, but requests lets ``REQUESTS_CA_BUNDLE`` and
    ``CURL_CA_BUNDLE`` override a session's CA: verification then fails against the engine's
    private CA. The engine connection needs nothing else from the environment, so the session
    stops reading it.
    """
    client = docker.from_env()
    if os.environ.get("DOCKER_TLS_VERIFY"):
        client.api.trust_env = False
    return client


def _without_credentials(address: str) -> str:
    """``ssh://user:secret@host`` -> ``ssh://host``: addresses go into errors and metadata."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        return address
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


def _env_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
