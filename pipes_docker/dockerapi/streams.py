"""The raw byte streams docker-py hands back: the attach connection and streamed responses.

Both are read in large chunks as the bytes arrive, and both can be closed from another thread
while one is blocked reading them (the socket is shut down, which wakes that reader).
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from pipes_docker.dockerapi import private

__all__ = ["ResponseStream", "SocketStream", "shutdown_response"]


class SocketStream:
    """The raw attach connection, read in large chunks.

    docker-py hands back whatever its transport has: a socket (unix, tcp), a ``SocketIO``
    wrapper around one, an SSL socket (TLS) or a paramiko ``Channel`` (ssh), which has ``recv``
    but no ``read``. Any read timeout left on the connection is lifted: a job may be silent for
    longer than the client's request timeout.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._sock: Any = private.attach_socket(raw)
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
        response = private.attach_response(self._raw)
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()


class ResponseStream:
    """A streamed HTTP response (the logs API), read as it arrives, chunked encoding undone."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def read(self, size: int) -> bytes:
        data: bytes = self._response.raw.read1(size)
        return data

    def close(self) -> None:
        shutdown_response(self._response)
        with contextlib.suppress(Exception):
            self._response.close()


def shutdown_response(response: Any) -> None:
    """Shut down a streamed response's socket: wakes a thread blocked reading it."""
    sock = private.response_socket(response)
    if sock is not None and hasattr(sock, "shutdown"):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
