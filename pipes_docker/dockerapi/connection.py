"""The connection to one Docker engine, shared by both engines (single host and Swarm).

:class:`DockerConnection` holds the docker-py client (made lazily from the environment when none
is given), says where the engine is without credentials, translates transport failures into
:class:`~pipes_docker.errors.PipesDockerEngineError` (``translate``) and opens the raw logs
endpoint of a container or a service (``log_stream``).
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions

from pipes_docker.dockerapi import private
from pipes_docker.dockerapi.api_version import ApiVersionMemory, refused_version
from pipes_docker.dockerapi.endpoint import DockerEndpoint, choose_endpoint, without_credentials
from pipes_docker.dockerapi.streams import ResponseStream
from pipes_docker.errors import PipesDockerEngineError, PipesDockerError

__all__ = [
    "DockerConnection",
    "explain_api_error",
    "is_read_timeout",
    "is_transient_status",
    "tls_failure",
]

logger = logging.getLogger(__name__)


class DockerConnection:
    """One engine's docker-py client, its address and the translation of its failures.

    Args:
        client: The docker-py client to use. When ``None``, one is made on first use for the
            engine the ``docker`` CLI would choose (:func:`choose_endpoint`: ``DOCKER_HOST``,
            else a Docker context, else the local socket) and kept for later runs; making it
            lazily lets a code location load while the engine is down. It speaks the API
            version the engine gave an earlier process (:mod:`.api_version`), if any, which
            saves the version request a fresh process would make.
    """

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self._client = client
        self._endpoint: DockerEndpoint | None = None
        self._lock = threading.RLock()
        # The remembered API versions this connection's clients were made with.
        self._pinned: set[str] = set()

    @property
    def endpoint(self) -> DockerEndpoint | None:
        """The engine chosen from the environment; ``None`` for a client given by the user."""
        if self._client is not None and self._endpoint is None:
            return None
        with self._lock:
            if self._endpoint is None:
                self._endpoint = choose_endpoint()
            return self._endpoint

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            endpoint = self.endpoint
            assert endpoint is not None
            with self._lock:
                if self._client is None:
                    logger.debug(
                        "Connecting to the Docker engine at %s (chosen by %s)",
                        endpoint.address,
                        endpoint.source,
                    )
                    try:
                        self._client = self._connect(endpoint)
                    except docker.errors.DockerException as exc:
                        failure = tls_failure(exc)
                        if failure is not None:
                            raise self._tls_error(failure) from exc
                        if _needs_paramiko(exc):
                            raise PipesDockerEngineError(
                                f"The Docker engine at {endpoint.address} is reached over ssh,"
                                ' which needs paramiko: pip install "pipes-docker[ssh]".'
                            ) from exc
                        raise PipesDockerEngineError(
                            f"Cannot reach the Docker engine at {endpoint.address}"
                            f" ({endpoint.source}): {exc}. Is the daemon running, and is it"
                            " the engine you meant (DOCKER_HOST, DOCKER_CONTEXT,"
                            " `docker context use`)?",
                            transient=True,
                        ) from exc
        return self._client

    def _connect(self, endpoint: DockerEndpoint) -> docker.DockerClient:
        memory = ApiVersionMemory()
        remembered = memory.load(endpoint)
        if remembered is not None:
            self._pinned.add(remembered)
            return endpoint.connect(version=remembered)
        client = endpoint.connect()
        memory.store(endpoint, str(client.api.api_version))
        return client

    def _forget_refused_version(self, exc: docker.errors.APIError) -> str | None:
        """The remembered version the engine refused, now forgotten here and on disk (the next
        use of :attr:`client` asks the engine); ``None`` for any other failure."""
        version = refused_version(exc)
        if version is None or version not in self._pinned:
            return None
        with self._lock:
            if self._client is not None and self._client.api.api_version == version:
                endpoint = self.endpoint
                if endpoint is not None:
                    ApiVersionMemory().forget(endpoint)
                self._client = None
        return version

    @property
    def source(self) -> str:
        """How the engine was chosen: ``env DOCKER_HOST``, ``context NAME (...)``,
        ``default socket``, or ``docker_client`` (a client given by the user)."""
        endpoint = self.endpoint
        return endpoint.source if endpoint is not None else "docker_client"

    @property
    def address(self) -> str:
        """Where the engine is, without credentials: ``unix:///...``, ``tcp://...``, ``ssh://...``."""
        if self._client is None:
            endpoint = self.endpoint
            assert endpoint is not None
            return endpoint.address
        api = self._client.api
        base_url = str(api.base_url)
        try:
            adapter = api.get_adapter(base_url)
        except Exception:
            adapter = None
        if getattr(adapter, "socket_path", None):
            return f"unix://{adapter.socket_path}"
        if getattr(adapter, "ssh_host", None):
            return without_credentials(f"ssh://{adapter.ssh_host}")
        return without_credentials(
            base_url.replace("https://", "tcp://").replace("http://", "tcp://")
        )

    def _tls_error(self, failure: ssl.SSLError) -> PipesDockerEngineError:
        """Not transient: a certificate that did not verify will not verify on a retry."""
        endpoint = self.endpoint
        if endpoint is not None:
            where = f"{self.address} ({endpoint.source})"
            cert_dir = endpoint.tls.cert_dir if endpoint.tls is not None else "(no TLS material)"
        else:
            where = f"{self.address} (docker_client)"
            verify = getattr(self._client.api, "verify", None) if self._client else None
            cert_dir = os.path.dirname(verify) if isinstance(verify, str) else "(the client's)"
        return PipesDockerEngineError(
            f"TLS with the Docker engine at {where} failed, cert dir {cert_dir}:"
            f" {describe_tls_failure(failure)}"
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
            failure = tls_failure(exc)  # requests' SSLError is a ConnectionError
            if failure is not None:
                raise self._tls_error(failure) from exc
            raise self._unreachable(action, exc) from exc
        except docker.errors.APIError as exc:
            refused = self._forget_refused_version(exc)
            if refused is not None:
                raise PipesDockerEngineError(
                    f"The Docker engine at {self.address} does not speak API version {refused},"
                    f" which it gave an earlier run ({explain_api_error(exc)}); it is forgotten"
                    " and the engine asked again.",
                    transient=True,
                ) from exc
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
            f" {exc}. Is the daemon running, and is it the engine you meant?",
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


def tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind ``exc`` (docker-py and requests wrap it), if any."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        reason = pending.pop()
        if id(reason) in seen:
            continue
        seen.add(id(reason))
        if isinstance(reason, ssl.SSLError):
            return reason
        pending.extend(arg for arg in reason.args if isinstance(arg, BaseException))
        pending.extend(r for r in (reason.__cause__, reason.__context__) if r is not None)
        inner = getattr(reason, "reason", None)  # urllib3's MaxRetryError
        if isinstance(inner, BaseException):
            pending.append(inner)
    return None


def describe_tls_failure(failure: ssl.SSLError) -> str:
    """What did not verify, in words, and what to check."""
    if isinstance(failure, ssl.SSLCertVerificationError):
        return (
            f"the engine's certificate did not verify ({failure.verify_message}). Check that"
            " ca.pem is the CA that signed the engine's certificate, that the certificate has"
            " not expired and names the host you connect to. (REQUESTS_CA_BUNDLE and"
            " CURL_CA_BUNDLE are not used for the engine.)"
        )
    reason = failure.reason or str(failure)
    return (
        f"the engine refused the handshake ({reason}): it did not accept the client"
        " certificate (cert.pem, key.pem), or wants one. Check that it is signed by a CA the"
        " engine trusts (its --tlscacert) and has not expired."
    )


def _needs_paramiko(exc: BaseException) -> bool:
    """docker-py's ssh:// transport without paramiko installed: no retry will install it."""
    return "paramiko" in str(exc)


def _is_ssh_transport_failure(exc: BaseException) -> bool:
    """A failure of docker-py's ssh transport (paramiko), e.g. sshd refusing a channel for a
    moment under load: the engine could not be reached, which may pass."""
    return type(exc).__module__.startswith("paramiko.")
