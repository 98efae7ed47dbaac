"""The connection to one Docker engine, shared by both engines (single host and Swarm).

:class:`DockerConnection` holds the docker-py client (made lazily from the environment when none
is given), says where the engine is without credentials, translates transport failures into
:class:`~pipes_docker.errors.PipesDockerEngineError` (``translate``) and opens the raw logs
endpoint of a container or a service (``log_stream``).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions

from pipes_docker.dockerapi import private
from pipes_docker.dockerapi.streams import ResponseStream
from pipes_docker.errors import PipesDockerEngineError, PipesDockerError

__all__ = [
    "DockerConnection",
    "explain_api_error",
    "is_read_timeout",
    "is_transient_status",
]


class DockerConnection:
    """One engine's docker-py client, its address and the translation of its failures.

    Args:
        client: The docker-py client to use. When ``None``, one is made from the environment
            (``DOCKER_HOST`` or the local socket) on first use and kept for later runs; making it
            lazily lets a code location load while the engine is down.
    """

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self._client = client
        self._lock = threading.Lock()

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    try:
                        self._client = _client_from_env()
                    except docker.errors.DockerException as exc:
                        if _needs_paramiko(exc):
                            raise PipesDockerEngineError(
                                f"The Docker engine at {_env_address()} is reached over ssh,"
                                " which needs paramiko: pip install \"pipes-docker[ssh]\"."
                            ) from exc
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

    @contextmanager
    def translate(self, action: str) -> Iterator[None]:
        """Turn a transport failure, or an engine failure that may pass, inside the block into a
        transient :class:`PipesDockerEngineError` naming the engine and ``action``.

        Anything else (a pipes-docker error, docker-py's other ``APIError``) passes untouched,
        for the caller to judge.
        """
        try:
            yield
        except PipesDockerError:
            raise
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise self._unreachable(action, exc) from exc
        except docker.errors.APIError as exc:
            if is_transient_status(exc):
                raise PipesDockerEngineError(
                    f"The Docker engine at {self.address} failed while {action}:"
                    f" {explain_api_error(exc)}",
                    transient=True,
                ) from exc
            raise
        except Exception as exc:
            if _is_ssh_transport_failure(exc):
                raise self._unreachable(action, exc) from exc
            raise

    def _unreachable(self, action: str, exc: BaseException) -> PipesDockerEngineError:
        return PipesDockerEngineError(
            f"Cannot reach the Docker engine at {self.address} while {action}:"
            f" {exc}. Is the daemon running, and does DOCKER_HOST point at it?",
            transient=True,
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
            response = private.get_streamed(
                api,
                path,
                object_id,
                params={"stdout": 1, "stderr": 1, "follow": int(follow)},
                # Followed, a job may be silent for longer than any read timeout.
                timeout=None if follow else api.timeout,
            )
            try:
                private.raise_for_status(api, response)
            except docker.errors.APIError as exc:
                response.close()
                raise PipesDockerEngineError(f"{refusal}: {explain_api_error(exc)}") from exc
        return ResponseStream(response)


def explain_api_error(exc: docker.errors.APIError) -> str:
    """What the engine said, as text (docker-py may hold it as bytes)."""
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", errors="replace")
    return str(explanation or exc)


def is_transient_status(exc: docker.errors.APIError) -> bool:
    """A failure the engine may not repeat: a server error or a rate limit."""
    return bool(exc.is_server_error() or exc.status_code == 429)


def is_read_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` is, or wraps, a read timeout (the request reached the engine)."""
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


def _needs_paramiko(exc: BaseException) -> bool:
    """docker-py's ssh:// transport without paramiko installed: no retry will install it."""
    return "paramiko" in str(exc)


def _is_ssh_transport_failure(exc: BaseException) -> bool:
    """A failure of docker-py's ssh transport (paramiko), e.g. sshd refusing a channel for a
    moment under load: the engine could not be reached, which may pass."""
    return type(exc).__module__.startswith("paramiko.")


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
