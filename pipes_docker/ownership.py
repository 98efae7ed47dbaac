"""Whose is it: labels on everything pipes-docker makes, and the sweep of what was orphaned.

Every container, service, config and lease a run makes carries labels that say it is ours and
which orchestrator process made it (host, PID namespace, pid) for which Dagster run and step. A
run removes what it made; what is still there was orphaned when its orchestrator died without
cleaning up (SIGKILL, a lost machine). :func:`sweep` removes it, on either backend.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import AssetExecutionContext, OpExecutionContext

from pipes_docker.backend import Backend, OwnedObject

__all__ = [
    "HOST_LABEL",
    "LABEL_PREFIX",
    "LEASE_LABEL",
    "MANAGED_LABEL",
    "PIDNS_LABEL",
    "PID_LABEL",
    "PROBE_LABEL",
    "job_name",
    "labels_for",
    "orchestrator_alive",
    "orchestrator_gone",
    "orchestrator_labels",
    "orphans",
    "pid_namespace",
    "same_orchestrator",
    "sweep",
]

LABEL_PREFIX = "io.pipes-docker"
MANAGED_LABEL = f"{LABEL_PREFIX}.managed"
HOST_LABEL = f"{LABEL_PREFIX}.orchestrator-host"
PID_LABEL = f"{LABEL_PREFIX}.orchestrator-pid"
# Hostname and pid name a process only within one PID namespace: two orchestrator containers on
# host networking share a hostname, not their pids.
PIDNS_LABEL = f"{LABEL_PREFIX}.orchestrator-pidns"
# On a lease: the id of the job a live orchestrator adopted (reattach).
LEASE_LABEL = f"{LABEL_PREFIX}.lease-for"
# On the container that probes whether the engine sees a dir (never started).
PROBE_LABEL = f"{LABEL_PREFIX}.probe"


def orchestrator_labels() -> dict[str, str]:
    """Labels naming this process: whose it is, for the orphan sweep."""
    return {
        MANAGED_LABEL: "true",
        HOST_LABEL: socket.gethostname(),
        PID_LABEL: str(os.getpid()),
        PIDNS_LABEL: pid_namespace(),
    }


def labels_for(context: OpExecutionContext | AssetExecutionContext) -> dict[str, str]:
    """This process's labels and the Dagster run, job and step the job is for."""
    labels = orchestrator_labels()
    for key, read in (
        ("dagster-run-id", lambda: context.run.run_id),
        ("dagster-job", lambda: context.run.job_name),
        ("dagster-step-key", lambda: context.get_step_execution_context().step.key),
    ):
        value = _try(read)
        if value:
            labels[f"{LABEL_PREFIX}.{key}"] = str(value)
    return labels


def job_name(context: OpExecutionContext | AssetExecutionContext) -> str:
    """``pipes-<run id>-<step>-<random>``: unique, and readable in ``docker ps``."""
    run_id = str(_try(lambda: context.run.run_id) or "norun")[:8]
    step = str(_try(lambda: context.get_step_execution_context().step.key) or "step")
    step = re.sub(r"[^a-zA-Z0-9_.-]+", "-", step).strip("-.")[:40] or "step"
    return f"pipes-{run_id}-{step}-{secrets.token_hex(4)}"


def orchestrator_gone(labels: Mapping[str, str]) -> bool:
    """Whether the orchestrator these labels name ran in this PID namespace and is dead."""
    return _same_process_space(labels) and not _process_alive(labels.get(PID_LABEL, ""))


def orchestrator_alive(labels: Mapping[str, str]) -> bool:
    """Whether the orchestrator these labels name is a live process in this PID namespace."""
    return _same_process_space(labels) and _process_alive(labels.get(PID_LABEL, ""))


def pid_namespace() -> str:
    """This process's PID namespace, e.g. ``pid:[4026531836]``; empty where it cannot be read."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def orphans(backend: Backend, *, older_than: timedelta) -> list[OwnedObject]:
    """What dead orchestrators left on ``backend``, in the order to remove it.

    Something labelled ours is orphaned, running or not, when the orchestrator that made it ran
    on this host, in this PID namespace, and its process is gone, or when it was made more than
    ``older_than`` ago (for orchestrators on other hosts). A job adopted by a live orchestrator
    (its lease says so) is not, and neither is what was made for something still there (a
    Swarm config of a live service).
    """
    now = datetime.now(UTC)
    owned = list(backend.owned({MANAGED_LABEL: "true"}))
    leased = {
        item.labels[LEASE_LABEL]
        for item in owned
        if LEASE_LABEL in item.labels and not orchestrator_gone(item.labels)
    }
    found: list[OwnedObject] = []
    kept: set[str] = set()
    for item in owned:
        orphaned = orchestrator_gone(item.labels) or (
            item.created is not None and now - item.created >= older_than
        )
        if item.id in leased or (item.parent is not None and item.parent in kept):
            orphaned = False
        if orphaned:
            found.append(item)
        else:
            kept.add(item.name or item.id)
    return found


def sweep(backend: Backend, *, older_than: timedelta, dry_run: bool = False) -> list[str]:
    """Remove what dead orchestrators left on ``backend`` (see :func:`orphans`); return the ids
    removed, or with ``dry_run`` the ids that would be, removing nothing."""
    removed: list[str] = []
    for item in orphans(backend, older_than=older_than):
        if not dry_run:
            backend.remove_owned(item)
        removed.append(item.id)
    return removed


def same_orchestrator(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """Whether two sets of labels name the same orchestrator process."""
    return all(a.get(key) == b.get(key) for key in (HOST_LABEL, PIDNS_LABEL, PID_LABEL))


def _same_process_space(labels: Mapping[str, str]) -> bool:
    pidns = pid_namespace()
    return (
        labels.get(HOST_LABEL) == socket.gethostname()
        and bool(pidns)
        and labels.get(PIDNS_LABEL) == pidns
    )


def _process_alive(pid_label: str) -> bool:
    try:
        pid = int(pid_label)
    except ValueError:
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, but someone else's
    return True


def _try(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception:
        return None
