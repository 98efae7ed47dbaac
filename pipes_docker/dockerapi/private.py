"""The ledger of private APIs: every use of a ``_``-name of docker-py (or of the transport it
hands back) lives here, one small function each, with why the public API cannot do it.

docker-py may change any of these in a release without notice; ``pyproject.toml`` pins the range
they were tested with, and ``tests/unit/test_docker_private_api.py`` fails when the installed
docker-py no longer has one of them, or changed its shape.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from docker.models.containers import _create_container_args
from docker.models.services import _get_create_service_kwargs

__all__ = [
    "attach_socket",
    "container_create_arguments",
    "decoded_json_stream",
    "get_streamed",
    "raise_for_status",
    "response_socket",
    "service_create_arguments",
]


def container_create_arguments(keywords: Mapping[str, Any]) -> dict[str, Any]:
    """The low-level ``APIClient.create_container`` arguments for ``containers.create`` keywords.

    Why private: the public ``containers.create()`` takes these friendly keywords but inspects
    the new container afterwards, a round trip a run does not need; the public low-level
    ``create_container()`` takes another shape. docker-py's own translation between the two is
    only reachable here. Raises ``TypeError`` for an unknown keyword.
    """
    arguments: dict[str, Any] = _create_container_args(dict(keywords))
    return arguments


def service_create_arguments(keywords: Mapping[str, Any]) -> dict[str, Any]:
    """The low-level ``APIClient.create_service`` arguments for ``services.create`` keywords.

    Why private: as for containers, the public ``services.create()`` inspects the new service
    afterwards (a round trip), and its keyword translation is only reachable here. Raises
    ``TypeError`` for an unknown keyword.
    """
    arguments: dict[str, Any] = _get_create_service_kwargs("create", dict(keywords))
    return arguments


def get_streamed(
    api: Any,
    path: str,
    object_id: str,
    *,
    params: Mapping[str, Any],
    timeout: float | None,
) -> Any:
    """A streamed GET of an API endpoint (``path`` with ``{0}`` for ``object_id``): the raw
    ``requests`` response, status not yet checked.

    Why private: the public ``logs()`` demultiplexes the stream and drops which stream (stdout,
    stderr) each frame came from, and the public ``stats()`` hides the response, so another
    thread cannot shut it down to end a blocked read. ``_url`` quotes the id and adds the API
    version prefix; ``_get`` applies the client's session, auth and transport.
    """
    return api._get(api._url(path, object_id), params=dict(params), stream=True, timeout=timeout)


def raise_for_status(api: Any, response: Any) -> None:
    """Raise docker-py's ``APIError`` subclass (``NotFound``, ...) for a failed response.

    Why private: the responses of :func:`get_streamed` are raw; this is docker-py's own mapping
    of a status to its error types, which the error translation relies on.
    """
    api._raise_for_status(response)


def decoded_json_stream(api: Any, response: Any) -> Iterator[Any]:
    """The JSON documents of a streamed response (the stats stream), one at a time.

    Why private: the public ``stats(stream=True, decode=True)`` does this but hides the
    response (see :func:`get_streamed`).
    """
    documents: Iterator[Any] = api._stream_helper(response, decode=True)
    return documents


def attach_socket(raw: Any) -> Any:
    """The socket under what ``APIClient.attach_socket`` returned, or ``None``.

    Why private: on unix and tcp engines docker-py returns the standard library's
    ``socket.SocketIO`` wrapper, whose ``close()`` leaves the real socket open and which offers
    no public way to ``shutdown()`` it (the only way to wake a reader blocked in another thread).
    A transport that hands back the socket itself (TLS, paramiko's ``Channel``) is returned as is.
    """
    return raw if hasattr(raw, "recv") else getattr(raw, "_sock", None)


def attach_response(raw: Any) -> Any:
    """The HTTP response docker-py keeps on what ``APIClient.attach_socket`` returned, or ``None``.

    Why private: on a TLS engine docker-py returns the SSL socket itself, and its ``close()``
    leaves the descriptor open while the response's reader still refers to it (the socket's
    io refs); only closing that response frees it. docker-py keeps it as ``sock._response``.
    """
    return getattr(raw, "_response", None)


def response_socket(response: Any) -> Any:
    """The socket under a streamed ``requests`` response, or ``None`` when it cannot be found.

    Why private: neither requests nor urllib3 offers a public way to shut down the connection of
    a response another thread is reading; ``close()`` blocks until that read returns (the stats
    stream sends a sample a second, a silent job's logs nothing at all). The path is
    urllib3's ``HTTPResponse._fp`` (an ``http.client.HTTPResponse``), its ``fp`` (a buffered
    reader), that one's ``raw`` (a ``SocketIO``) and its ``_sock``.
    """
    raw = getattr(response, "raw", None)
    sock = getattr(getattr(getattr(raw, "_fp", None), "fp", None), "raw", None)
    return getattr(sock, "_sock", sock)
