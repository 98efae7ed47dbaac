"""The bind-mount probe's answers, remembered across processes.

Dagster runs every step in a new process, so a cache that lives as long as the process is empty
for every step: each one would pay for the probe (a container created, read and removed, some
60 ms on a local engine). The answers are therefore also kept on disk
(:mod:`pipes_docker.answer_files`: one private file per question, written atomically, every
failure a miss).

An answer is only reused for the same question asked from the same place: the key holds the
engine's address, both roots, and what identifies this process's view of the filesystem (the
host name, the kernel's boot id, and the device and inode of the local root), so a container with
its own ``/tmp``, another machine sharing the home dir or a reboot asks afresh. Answers expire
after :data:`ANSWER_TTL_SECONDS`. An answer found wrong (the engine refuses to mount a run's dir
it was said to see) is forgotten by the caller (:meth:`ProbeCache.forget`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from pipes_docker.answer_files import AnswerFiles, default_cache_dir, machine_identity
from pipes_docker.values import frozen

__all__ = ["ANSWER_TTL_SECONDS", "ProbeCache", "ProbeKey", "default_cache_dir"]

# Long enough that a busy orchestrator probes a few times a day, short enough that an engine
# swapped behind the same address is noticed without anyone clearing anything.
ANSWER_TTL_SECONDS = 3600.0
_FORMAT = 1


@frozen
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
            **machine_identity(),
            "root_dev": info.st_dev,
            "root_ino": info.st_ino,
        }


@frozen
class CachedAnswer:
    shared: bool
    reason: str


class ProbeCache:
    """Probe answers on disk under ``directory``; every failure is a miss.

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
        self._files = AnswerFiles(directory, "probe", ttl_seconds=ttl_seconds, clock=clock)

    def load(self, key: ProbeKey) -> CachedAnswer | None:
        fingerprint = _fingerprint(key)
        record = self._files.load(fingerprint) if fingerprint is not None else None
        if record is None or not isinstance(record.get("shared"), bool):
            return None
        return CachedAnswer(record["shared"], str(record.get("reason", "")))

    def store(self, key: ProbeKey, answer: CachedAnswer) -> None:
        fingerprint = _fingerprint(key)
        if fingerprint is not None:
            self._files.store(fingerprint, {"shared": answer.shared, "reason": answer.reason})

    def forget(self, key: ProbeKey) -> None:
        fingerprint = _fingerprint(key)
        if fingerprint is not None:
            self._files.forget(fingerprint)


def _fingerprint(key: ProbeKey) -> dict[str, Any] | None:
    try:
        return key.fingerprint()
    except OSError:
        return None
