"""The engine's API version, remembered across processes.

docker-py's client asks the engine for its API version (``GET /version``) when it is made,
unless it is told one. Dagster runs every step in a new process, so every step paid that round
trip (7-9 ms on a local engine, more over tcp or ssh) before its first real request. The version
an engine answered is therefore remembered on disk (:mod:`pipes_docker.answer_files`), keyed by
the engine's address, how it was chosen and its TLS dir, plus the machine and its boot (an
upgraded engine restarts), and trusted for :data:`API_VERSION_TTL_SECONDS`.

A remembered version can be wrong only if the engine behind the address changed: a newer engine
still speaks the older version; an older one refuses it (``client version 1.45 is too new``).
The connection then forgets the version, makes its client again by asking the engine, and the
call is retried (:meth:`~pipes_docker.dockerapi.connection.DockerConnection.translate`).
"""

from __future__ import annotations

import re
from typing import Any

import docker.errors

from pipes_docker.answer_files import AnswerFiles, default_cache_dir, machine_identity
from pipes_docker.dockerapi.endpoint import DockerEndpoint

__all__ = ["API_VERSION_TTL_SECONDS", "ApiVersionMemory", "refused_version"]

API_VERSION_TTL_SECONDS = 3600.0
_FORMAT = 1
_VERSION = re.compile(r"^\d+\.\d+$")
_REFUSED = re.compile(r"client version (\S+) is too (?:new|old)", re.IGNORECASE)


class ApiVersionMemory:
    """Remembered API versions of engines chosen from the environment; every failure a miss.

    Args:
        directory: Where the answers go; by default the user's cache dir, read when made.
    """

    def __init__(self, directory: str | None = None) -> None:
        self._files = AnswerFiles(
            directory if directory is not None else default_cache_dir(),
            "api-version",
            ttl_seconds=API_VERSION_TTL_SECONDS,
        )

    def load(self, endpoint: DockerEndpoint) -> str | None:
        record = self._files.load(_fingerprint(endpoint))
        version = record.get("api_version") if record is not None else None
        return version if isinstance(version, str) and _VERSION.match(version) else None

    def store(self, endpoint: DockerEndpoint, version: str) -> None:
        if _VERSION.match(version):
            self._files.store(_fingerprint(endpoint), {"api_version": version})

    def forget(self, endpoint: DockerEndpoint) -> None:
        self._files.forget(_fingerprint(endpoint))


def refused_version(exc: docker.errors.APIError) -> str | None:
    """The API version the engine refused to speak (``client version X is too new/old``)."""
    if exc.status_code != 400:
        return None
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", errors="replace")
    found = _REFUSED.search(str(explanation or exc))
    return found.group(1) if found else None


def _fingerprint(endpoint: DockerEndpoint) -> dict[str, Any]:
    # The address without credentials: the fingerprint is written into the file.
    return {
        "format": _FORMAT,
        "engine_address": endpoint.address,
        "source": endpoint.source,
        "tls_dir": endpoint.tls.cert_dir if endpoint.tls is not None else None,
        **machine_identity(),
    }
