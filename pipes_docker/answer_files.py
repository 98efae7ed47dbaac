"""Small answers remembered on disk across processes, safely.

Dagster runs every step in a new process, so what a process learns about an engine (whether it
sees our files, which API version it speaks) is gone by the next step, and asking again costs
every step a round trip or more. Such answers are kept here, one small file per question, in the
user's cache dir (``$PIPES_DOCKER_CACHE_DIR``, else ``$XDG_CACHE_HOME/pipes-docker``, else
``~/.cache/pipes-docker``).

A question is a *fingerprint*: a JSON-able dict that names everything the answer depends on
(the caller adds what identifies the machine: :func:`machine_identity`). A file is only read back
for the same fingerprint, by the same user, from a private dir, within its time to live.
Writers replace a file atomically (write a temp file, then rename), so concurrent processes
never read half an answer; the last writer wins, and every writer writes a true answer. Anything
unexpected (no home dir, a read-only disk, a corrupt or foreign file) makes the cache miss, never
fail: the caller then asks the engine as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

__all__ = ["AnswerFiles", "default_cache_dir", "machine_identity"]

_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
_MAX_BYTES = 64 * 1024


def default_cache_dir() -> str | None:
    """Where answers are kept, or ``None`` when this process has no cache dir."""
    explicit = os.environ.get("PIPES_DOCKER_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):
        return None  # no home dir ("~" left unexpanded): keep nothing rather than guess
    return os.path.join(base, "pipes-docker")


def machine_identity() -> dict[str, str]:
    """The host name and the kernel's boot id: another machine sharing the home dir, or a
    reboot (which may have upgraded the engine), asks afresh."""
    return {"host": socket.gethostname(), "boot_id": _boot_id()}


class AnswerFiles:
    """Answer files of one ``kind`` under ``directory``; every failure is a miss.

    Args:
        directory: Where answer files go (made 0700 on first store); ``None`` keeps nothing.
        kind: The files' name prefix (``probe``, ``api-version``).
        ttl_seconds: How long an answer is trusted.
        clock: Seconds since the epoch (for tests).
    """

    def __init__(
        self,
        directory: str | None,
        kind: str,
        *,
        ttl_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._directory = directory
        self._kind = kind
        self._ttl = ttl_seconds
        self._clock = clock

    def load(self, fingerprint: Mapping[str, Any]) -> dict[str, Any] | None:
        """The answer stored for ``fingerprint`` (without its bookkeeping), or ``None``."""
        path = self._path(fingerprint)
        if path is None:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if info.st_uid != os.getuid() or info.st_size > _MAX_BYTES:
                return None
            with os.fdopen(fd, "rb", closefd=False) as file:
                record = orjson.loads(file.read())
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        if not isinstance(record, dict) or record.pop("key", None) != dict(fingerprint):
            return None  # another question's file (a hash collision) or a foreign one
        age = self._clock() - _as_float(record.pop("stored_at", None))
        if not 0 <= age <= self._ttl:
            return None
        return record

    def store(self, fingerprint: Mapping[str, Any], answer: Mapping[str, Any]) -> None:
        path = self._path(fingerprint)
        if path is None or not self._ensure_directory():
            return
        data = orjson.dumps({**answer, "key": dict(fingerprint), "stored_at": self._clock()})
        temp_path = None
        try:
            fd, temp_path = tempfile.mkstemp(prefix=".answer-", dir=os.path.dirname(path))
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(temp_path, path)  # atomic: readers see the old answer or the new one
            temp_path = None
        except OSError:
            pass
        finally:
            if temp_path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp_path)

    def forget(self, fingerprint: Mapping[str, Any]) -> None:
        path = self._path(fingerprint)
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _path(self, fingerprint: Mapping[str, Any]) -> str | None:
        if self._directory is None:
            return None
        digest = hashlib.sha256(orjson.dumps(dict(fingerprint), option=orjson.OPT_SORT_KEYS))
        return os.path.join(self._directory, f"{self._kind}-{digest.hexdigest()[:32]}.json")

    def _ensure_directory(self) -> bool:
        """Make the dir (0700) if needed; ``False`` when it is not a private dir of ours."""
        assert self._directory is not None
        try:
            os.makedirs(self._directory, mode=stat.S_IRWXU, exist_ok=True)
            info = os.lstat(self._directory)
        except OSError:
            return False
        return (
            stat.S_ISDIR(info.st_mode)
            and info.st_uid == os.getuid()
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        )


def _boot_id() -> str:
    try:
        with open(_BOOT_ID_PATH, encoding="ascii") as file:
            return file.read().strip()
    except OSError:
        return ""


def _as_float(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else float("-inf")
