"""The bind-mount probe's answers, remembered across processes.

Dagster runs every step in a new process, so a cache that lives as long as the process is empty
for every step: each one would pay for the probe (a container created, read and removed, some
60 ms on a local engine). The answers are therefore also kept on disk, one small file per
question, in the user's cache dir (``$PIPES_DOCKER_CACHE_DIR``, else
``$XDG_CACHE_HOME/pipes-docker``, else ``~/.cache/pipes-docker``).

An answer is only reused for the same question asked from the same place: the key holds the
engine's address, both roots, and what identifies this process's view of the filesystem (the
host name, the kernel's boot id, and the device and inode of the local root), so a container with
its own ``/tmp``, another machine sharing the home dir or a reboot asks afresh. Answers expire
after :data:`ANSWER_TTL_SECONDS`. An answer found wrong (the engine refuses to mount a run's dir
it was said to see) is forgotten by the caller (:meth:`ProbeCache.forget`).

Writers replace a file atomically (write a temp file, then rename), so concurrent processes
never read half an answer; the last writer wins, and every writer writes a true answer. Anything
unexpected (no home dir, a read-only disk, a corrupt or foreign file) makes the cache miss, never
fail: the caller then probes as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["ANSWER_TTL_SECONDS", "ProbeCache", "ProbeKey", "default_cache_dir"]

# Long enough that a busy orchestrator probes a few times a day, short enough that an engine
# swapped behind the same address is noticed without anyone clearing anything.
ANSWER_TTL_SECONDS = 3600.0
_FORMAT = 1
_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def default_cache_dir() -> str | None:
    """Where answers are kept, or ``None`` when this process has no cache dir."""
    explicit = os.environ.get("PIPES_DOCKER_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):
        return None  # no home dir ("~" left unexpanded): keep nothing rather than guess
    return os.path.join(base, "pipes-docker")


@dataclass(frozen=True)
class ProbeKey:
    """One probe question: does the engine at ``engine_address`` see ``local_root`` there?"""

    engine_address: str
    local_root: str
    engine_root: str

    def fingerprint(self) -> dict[str, Any]:
        """The key plus what identifies this process's view of ``local_root``.

        Raises:
            OSError: ``local_root`` cannot be examined.
        """
        info = os.stat(self.local_root)
        return {
            "format": _FORMAT,
            "engine_address": self.engine_address,
            "local_root": self.local_root,
            "engine_root": self.engine_root,
            "host": socket.gethostname(),
            "boot_id": _boot_id(),
            "root_dev": info.st_dev,
            "root_ino": info.st_ino,
        }


@dataclass(frozen=True)
class CachedAnswer:
    shared: bool
    reason: str


class ProbeCache:
    """Answers on disk under ``directory``; every failure is a miss.

    Args:
        directory: Where answer files go (made 0700 on first store); ``None`` keeps nothing.
        ttl_seconds: How long an answer is trusted.
        clock: Seconds since the epoch (for tests).
    """

    def __init__(
        self,
        directory: str | None,
        *,
        ttl_seconds: float = ANSWER_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._directory = directory
        self._ttl = ttl_seconds
        self._clock = clock

    def load(self, key: ProbeKey) -> CachedAnswer | None:
        located = self._locate(key)
        if located is None:
            return None
        path, fingerprint = located
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if info.st_uid != os.getuid() or info.st_size > 64 * 1024:
                return None
            with os.fdopen(fd, "rb", closefd=False) as file:
                record = orjson.loads(file.read())
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        if not isinstance(record, dict) or record.get("key") != fingerprint:
            return None  # another question's file (a hash collision) or a foreign one
        age = self._clock() - _as_float(record.get("stored_at"))
        if not 0 <= age <= self._ttl or not isinstance(record.get("shared"), bool):
            return None
        return CachedAnswer(record["shared"], str(record.get("reason", "")))

    def store(self, key: ProbeKey, answer: CachedAnswer) -> None:
        located = self._locate(key)
        if located is None or not self._ensure_directory():
            return
        path, fingerprint = located
        data = orjson.dumps(
            {
                "key": fingerprint,
                "shared": answer.shared,
                "reason": answer.reason,
                "stored_at": self._clock(),
            }
        )
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

    def forget(self, key: ProbeKey) -> None:
        located = self._locate(key)
        if located is not None:
            with contextlib.suppress(OSError):
                os.unlink(located[0])

    def _locate(self, key: ProbeKey) -> tuple[str, dict[str, Any]] | None:
        if self._directory is None:
            return None
        try:
            fingerprint = key.fingerprint()
        except OSError:
            return None
        digest = hashlib.sha256(orjson.dumps(fingerprint, option=orjson.OPT_SORT_KEYS))
        return os.path.join(self._directory, f"probe-{digest.hexdigest()[:32]}.json"), fingerprint

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
