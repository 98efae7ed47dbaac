"""Turn what a user asked for into a :class:`ContainerSpec`: plain values, merged and checked.

Environment layers merge in order (the client's ``env``, ``container_kwargs["environment"]``, the
run's ``env``) with the Pipes bootstrap variables last, so no user setting can break the
protocol. Labels name the container as ours and say which Dagster run and step made it.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dagster import AssetExecutionContext, OpExecutionContext

from pipes_docker.backend import ContainerFile, Mount
from pipes_docker.container.engine import ContainerSpec
from pipes_docker.vendor import installed_dagster_pipes_dir, package_files

__all__ = [
    "HOST_LABEL",
    "INJECT_PATH",
    "LABEL_PREFIX",
    "LEASE_LABEL",
    "MANAGED_LABEL",
    "PIDNS_LABEL",
    "PID_LABEL",
    "build_spec",
    "check_container_kwargs",
    "container_name",
    "inject_dagster_pipes",
    "labels_for",
    "merge_container_kwargs",
    "merge_env",
    "orchestrator_alive",
    "orchestrator_gone",
    "orchestrator_labels",
    "pid_namespace",
    "pop_environment",
]

LABEL_PREFIX = "io.pipes-docker"
MANAGED_LABEL = f"{LABEL_PREFIX}.managed"
HOST_LABEL = f"{LABEL_PREFIX}.orchestrator-host"
PID_LABEL = f"{LABEL_PREFIX}.orchestrator-pid"
# Hostname and pid name a process only within one PID namespace: two orchestrator containers on
# host networking share a hostname, not their pids.
PIDNS_LABEL = f"{LABEL_PREFIX}.orchestrator-pidns"
# On a lease container: the id of the container a live orchestrator adopted (reattach).
LEASE_LABEL = f"{LABEL_PREFIX}.lease-for"


# Where an injected dagster_pipes appears in the container (inject_pipes=True).
INJECT_PATH = "/opt/pipes-docker/inject"

# Keywords pipes-docker must control to keep its guarantees.
_RESERVED_KWARGS = frozenset(
    {"image", "command", "detach", "auto_remove", "remove", "stdout", "stderr", "stream"}
)


@dataclass(frozen=True)
class Injection:
    env: Mapping[str, str]
    files: Sequence[ContainerFile]


def inject_dagster_pipes(
    image_env: Mapping[str, str], env_layers: Sequence[Mapping[str, str]]
) -> Injection:
    """Copy the installed dagster_pipes into the container and put it first on PYTHONPATH.

    Copied, not bind-mounted, so injection works on engines that do not share our files. The
    PYTHONPATH already in force (the user's env, else the image's) is kept after ours.
    """
    pythonpath = image_env.get("PYTHONPATH", "")
    for layer in env_layers:
        pythonpath = layer.get("PYTHONPATH", pythonpath)
    package = installed_dagster_pipes_dir()
    return Injection(
        env={"PYTHONPATH": ":".join(p for p in (INJECT_PATH, pythonpath) if p)},
        files=[
            ContainerFile(f"{INJECT_PATH}/{package.name}/{path.name}", path.read_bytes())
            for path in package_files(package)
        ],
    )


def check_container_kwargs(kwargs: Mapping[str, Any]) -> None:
    reserved = sorted(_RESERVED_KWARGS & set(kwargs))
    if reserved:
        raise ValueError(
            f"container_kwargs may not set {', '.join(reserved)}: pipes-docker controls"
            " these to attach to, wait for and remove the container. Pass image and command"
            " to run() instead."
        )


def merge_container_kwargs(
    client_kwargs: Mapping[str, Any], run_kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """A run's keywords win, except that environment, labels and volumes add up."""
    merged = {**client_kwargs, **run_kwargs}
    if "environment" in client_kwargs and "environment" in run_kwargs:
        merged["environment"] = {
            **_environment_dict(client_kwargs["environment"]),
            **_environment_dict(run_kwargs["environment"]),
        }
    if "labels" in client_kwargs and "labels" in run_kwargs:
        merged["labels"] = {**client_kwargs["labels"], **run_kwargs["labels"]}
    if "volumes" in client_kwargs and "volumes" in run_kwargs:
        merged["volumes"] = [
            *_normalize_volumes(client_kwargs["volumes"]),
            *_normalize_volumes(run_kwargs["volumes"]),
        ]
    return merged


def pop_environment(options: dict[str, Any]) -> Mapping[str, str]:
    """Take docker-py's ``environment`` (a dict or ``KEY=VALUE`` list) out of ``options``."""
    return _environment_dict(options.pop("environment", None) or {})


def _environment_dict(environment: Any) -> dict[str, str]:
    """docker-py takes ``environment`` as a dict or a list of ``KEY=VALUE`` strings."""
    if isinstance(environment, Mapping):
        return {str(k): str(v) for k, v in environment.items()}
    pairs = {}
    for item in environment:
        key, _, value = str(item).partition("=")
        pairs[key] = value
    return pairs


def _normalize_volumes(volumes: Any) -> list[str]:
    """docker-py accepts ``volumes`` as a dict or a list of ``host:container[:mode]`` strings."""
    if not volumes:
        return []
    if isinstance(volumes, Mapping):
        binds = []
        for host, target in volumes.items():
            if isinstance(target, Mapping):
                binds.append(f"{host}:{target['bind']}:{target.get('mode', 'rw')}")
            else:
                binds.append(f"{host}:{target}")
        return binds
    return [str(v) for v in volumes]


def build_spec(
    *,
    image: str,
    command: str | Sequence[str] | None,
    name: str,
    env_layers: Sequence[Mapping[str, str]],
    bootstrap_env: Mapping[str, str],
    labels: Mapping[str, str],
    options: dict[str, Any],
    mounts: Sequence[Mount],
    files: Sequence[ContainerFile] = (),
    keep_output: bool = False,
) -> ContainerSpec:
    env = merge_env(env_layers, bootstrap_env)
    user_labels = dict(options.pop("labels", None) or {})
    volumes = _normalize_volumes(options.pop("volumes", None))
    options.setdefault("init", True)  # forwards SIGTERM to the job and reaps its children
    # The output is captured from the attach stream; a log driver would write it all to disk a
    # second time (about 4x the cost on a 100 MB flood), unless it must be read again after a
    # reattach (keep_output: the engine's default driver). A user's log_config wins.
    if not keep_output:
        options.setdefault("log_config", {"type": "none", "config": {}})
    name = options.pop("name", None) or name
    return ContainerSpec(
        image=image,
        name=name,
        command=command,
        env=env,
        labels={**user_labels, **labels},
        mounts=list(mounts),
        volumes=volumes,
        options=options,
        files=list(files),
    )


def merge_env(
    env_layers: Sequence[Mapping[str, str]], bootstrap_env: Mapping[str, str]
) -> dict[str, str]:
    """The layers in order, each over the last, and the Pipes bootstrap variables over all."""
    env: dict[str, str] = {}
    for layer in env_layers:
        env.update(layer)
    env.update(bootstrap_env)  # last: a user's env must not break the protocol
    return env


def orchestrator_labels() -> dict[str, str]:
    """Labels naming this process: whose container it is, for the orphan sweep."""
    return {
        MANAGED_LABEL: "true",
        HOST_LABEL: socket.gethostname(),
        PID_LABEL: str(os.getpid()),
        PIDNS_LABEL: pid_namespace(),
    }


def orchestrator_gone(labels: Mapping[str, str]) -> bool:
    """Whether the orchestrator these labels name ran in this PID namespace and is dead."""
    return _same_process_space(labels) and not _process_alive(labels.get(PID_LABEL, ""))


def orchestrator_alive(labels: Mapping[str, str]) -> bool:
    """Whether the orchestrator these labels name is a live process in this PID namespace."""
    return _same_process_space(labels) and _process_alive(labels.get(PID_LABEL, ""))


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


def labels_for(context: OpExecutionContext | AssetExecutionContext) -> dict[str, str]:
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


def pid_namespace() -> str:
    """This process's PID namespace, e.g. ``pid:[4026531836]``; empty where it cannot be read."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def container_name(context: OpExecutionContext | AssetExecutionContext) -> str:
    run_id = str(_try(lambda: context.run.run_id) or "norun")[:8]
    step = str(_try(lambda: context.get_step_execution_context().step.key) or "step")
    step = re.sub(r"[^a-zA-Z0-9_.-]+", "-", step).strip("-.")[:40] or "step"
    return f"pipes-{run_id}-{step}-{secrets.token_hex(4)}"


def _try(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception:
        return None
