"""The per-run temp dirs of the mounted channel: who made each, and the sweep of the orphaned.

A run removes its temp dir when it ends. An orchestrator killed mid-run (SIGKILL) cannot, and a
step retry that adopts its container (reattach) takes the dir over and removes it when done; a
dir nobody adopts would stay forever. Each dir therefore holds ``owner.json``, the labels of
the orchestrator process that uses it (rewritten by an adopter), and :func:`orphaned_temp_dirs`
finds the dirs whose orchestrator is gone and of which no job is left on the engine to adopt.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta

import orjson

from pipes_docker.ownership import (
    orchestrator_alive,
    orchestrator_gone,
    orchestrator_labels,
    same_orchestrator,
)

__all__ = [
    "OWNER_FILE",
    "TEMP_DIR_PREFIX",
    "mark_owner",
    "orphaned_temp_dirs",
    "remove_temp_dir",
]

TEMP_DIR_PREFIX = "pipes-docker-"
OWNER_FILE = "owner.json"


def mark_owner(root: str) -> None:
    """Say in ``root`` that this process uses it (a new run, or an adopter taking it over)."""
    path = os.path.join(root, OWNER_FILE)
    partial = f"{path}.partial"
    with open(partial, "wb") as file:
        file.write(orjson.dumps(orchestrator_labels()))
    os.replace(partial, path)  # never half-written for a concurrent sweep


def orphaned_temp_dirs(
    temp_root: str | None,
    *,
    jobs: Sequence[Mapping[str, str]],
    older_than: timedelta,
) -> list[str]:
    """The temp dirs under ``temp_root`` (the system's by default) that no run can still use.

    A dir is orphaned when the orchestrator its ``owner.json`` names ran on this host, in this
    PID namespace, and is gone, and no job with that orchestrator's labels is in ``jobs`` (the
    labels of every job of ours still on the engine: a retry could adopt it and re-read its
    messages from the dir). A dir without a readable ``owner.json`` (made by an older
    pipes-docker, or a leaked probe dir), or whose orchestrator was on another host, is orphaned
    once it is ``older_than`` old and no job of that orchestrator is left. A live orchestrator's
    dir is never orphaned, however old.
    """
    root = temp_root or tempfile.gettempdir()
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    found = []
    now = time.time()
    for name in names:
        path = os.path.join(root, name)
        if not name.startswith(TEMP_DIR_PREFIX) or not _looks_ours(path):
            continue
        owner = _owner(path)
        if owner is not None:
            if orchestrator_alive(owner) or any(same_orchestrator(owner, j) for j in jobs):
                continue
            if orchestrator_gone(owner):
                found.append(path)
                continue
        try:
            age = now - os.stat(path).st_mtime
        except OSError:
            continue
        if age >= older_than.total_seconds():
            found.append(path)
    return found


def remove_temp_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _looks_ours(path: str) -> bool:
    """A run's dir (``owner.json`` or ``io/``) or a probe's; never another tool's dir that
    happens to share the prefix."""
    if os.path.islink(path) or not os.path.isdir(path):
        return False
    name = os.path.basename(path)
    return (
        name.startswith(f"{TEMP_DIR_PREFIX}probe-")
        or os.path.exists(os.path.join(path, OWNER_FILE))
        or os.path.isdir(os.path.join(path, "io"))
    )


def _owner(path: str) -> dict[str, str] | None:
    try:
        with open(os.path.join(path, OWNER_FILE), "rb") as file:
            owner = orjson.loads(file.read())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(owner, dict):
        return None
    return {str(key): str(value) for key, value in owner.items()}
