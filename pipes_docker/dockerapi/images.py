"""Image calls both engines make (inspect, digests, environment, pull), on one connection.

:class:`ImageCalls` is the base of :class:`~pipes_docker.dockerapi.containers.DockerEngine` and
:class:`~pipes_docker.dockerapi.services.DockerSwarmEngine`: the connection (a docker-py client
made lazily, its address and how it was chosen) and what each engine asks of images.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import docker
import docker.errors

from pipes_docker.dockerapi.connection import DockerConnection, explain_api_error
from pipes_docker.errors import PipesDockerImageError
from pipes_docker.retry import retry_transient_engine_errors

__all__ = ["ImageCalls"]


class ImageCalls:
    """One engine's connection, and the image calls made through it.

    Args:
        client: The docker-py client to use. When ``None``, one is made from the environment
            (``DOCKER_HOST``, a Docker context, or the local socket) on first use and kept for
            later runs; making it lazily lets a code location load while the engine is down.
    """

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self._connection = DockerConnection(client)
        self._lock = threading.Lock()
        # What the last inspect of an image id said (each image_id() inspects again): an id
        # names one image's content, so its environment never changes.
        self._digests: dict[str, list[str]] = {}
        self._envs: dict[str, dict[str, str]] = {}

    @property
    def client(self) -> docker.DockerClient:
        return self._connection.client

    @property
    def address(self) -> str:
        """Where the engine is, without credentials: ``unix:///...``, ``tcp://...``, ``ssh://...``."""
        return self._connection.address

    @property
    def source(self) -> str:
        """How the engine was chosen (see :attr:`DockerConnection.source`)."""
        return self._connection.source

    @retry_transient_engine_errors
    def image_id(self, image: str) -> str | None:
        attrs = self._inspect(image)
        if attrs is None:
            return None
        image_id = str(attrs["Id"])
        with self._lock:
            self._digests[image_id] = list(attrs.get("RepoDigests") or [])
            self._envs[image_id] = _config_env(attrs)
        return image_id

    def image_digests(self, image_id: str) -> Sequence[str]:
        # Read from the inspect image_id() made for this run: no round trip of its own.
        with self._lock:
            return list(self._digests.get(image_id, ()))

    @retry_transient_engine_errors
    def image_config_env(self, image: str) -> Mapping[str, str] | None:
        """The environment the image's config sets; ``None`` when the engine has no such image.

        ``image`` is a reference or an id; for an id :meth:`image_id` returned, no round trip.
        """
        with self._lock:
            known = self._envs.get(image)
        if known is not None:
            return dict(known)
        attrs = self._inspect(image)
        if attrs is None:
            return None
        return _config_env(attrs)

    def _inspect(self, image: str) -> Mapping[str, Any] | None:
        """The engine's inspect of ``image``; ``None`` when it has no such image."""
        with self._connection.translate(f"inspecting image {image!r}"):
            try:
                attrs: Mapping[str, Any] = self.client.api.inspect_image(image)
            except docker.errors.ImageNotFound:
                return None
        return attrs

    @retry_transient_engine_errors
    def pull(self, image: str, auth: Mapping[str, str] | None) -> None:
        repository, tag = _split_reference(image)
        with self._connection.translate(f"pulling image {image!r}"):
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


def _config_env(attrs: Mapping[str, Any]) -> dict[str, str]:
    pairs = (item.partition("=") for item in (attrs.get("Config") or {}).get("Env") or [])
    return {key: value for key, _, value in pairs}


def _is_pull_rate_limit(exc: docker.errors.APIError) -> bool:
    gateway = exc.status_code in (429, 502, 503, 504)
    return gateway or "toomanyrequests" in explain_api_error(exc).lower()


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
