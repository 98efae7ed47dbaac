"""A run's job as a Swarm service: ``services.create`` keywords merged and checked.

Files the task needs (a context too large for an environment variable) travel as Swarm configs:
one per file up to the manager's cap of 500 KiB per config; a larger file is cut into parts of that
size and joined again on the node by a templated config, so the task sees one whole file.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from pipes_docker.backend import ContainerFile
from pipes_docker.environment import environment_dict
from pipes_docker.errors import PipesDockerConfigError
from pipes_docker.ownership import LABEL_PREFIX
from pipes_docker.swarm.engine import ServiceConfig

__all__ = [
    "CONFIG_PART_BYTES",
    "SERVICE_LABEL",
    "check_service_kwargs",
    "merge_service_kwargs",
    "service_configs",
    "service_name",
]

# swarmkit refuses a config over 500 KiB (MaxConfigSize); parts stay a little under it.
CONFIG_PART_BYTES = 500 * 1000
# On a config: the name of the service it was made for (the orphan sweep).
SERVICE_LABEL = f"{LABEL_PREFIX}.service"

_RESERVED_KWARGS = frozenset({"image", "command", "args", "mode", "restart_policy"})
# Keywords whose values add up when both the client and a run set them.
_MAPPINGS = ("labels", "container_labels")
_LISTS = ("configs", "secrets", "constraints", "mounts", "networks")
_NAME_LIMIT = 63


def check_service_kwargs(kwargs: Mapping[str, Any]) -> None:
    reserved = sorted(_RESERVED_KWARGS & set(kwargs))
    if reserved:
        raise PipesDockerConfigError(
            f"service_kwargs may not set {', '.join(reserved)}: pipes-docker runs every job as a"
            " replicated-job service of one task that is never restarted. Pass image and command"
            " to run() instead."
        )


def merge_service_kwargs(
    client_kwargs: Mapping[str, Any], run_kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """A run's keywords win, except that env, labels and lists (constraints, mounts...) add up."""
    merged = {**client_kwargs, **run_kwargs}
    if "env" in client_kwargs and "env" in run_kwargs:
        merged["env"] = {
            **environment_dict(client_kwargs["env"]),
            **environment_dict(run_kwargs["env"]),
        }
    for key in _MAPPINGS:
        if key in client_kwargs and key in run_kwargs:
            merged[key] = {**client_kwargs[key], **run_kwargs[key]}
    for key in _LISTS:
        if key in client_kwargs and key in run_kwargs:
            merged[key] = [*client_kwargs[key], *run_kwargs[key]]
    return merged


def service_name(container_name: str) -> str:
    """A container-style run name, kept within Swarm's 63 characters (its random tail kept)."""
    if len(container_name) <= _NAME_LIMIT:
        return container_name
    head, _, tail = container_name.rpartition("-")
    return f"{head[: _NAME_LIMIT - len(tail) - 1].rstrip('-.')}-{tail}"


def service_configs(files: Sequence[ContainerFile]) -> list[ServiceConfig]:
    """The Swarm configs that put ``files`` in the task, each whole at its path."""
    token = secrets.token_hex(6)
    configs: list[ServiceConfig] = []

    def name() -> str:
        return f"pipes-{token}-{len(configs):03d}"

    for file in files:
        if len(file.data) <= CONFIG_PART_BYTES:
            configs.append(ServiceConfig(name(), file.data, file.path, mode=file.mode))
            continue
        parts = []
        for index, start in enumerate(range(0, len(file.data), CONFIG_PART_BYTES)):
            target = f"{file.path}.part-{index:03d}"
            part = file.data[start : start + CONFIG_PART_BYTES]
            configs.append(ServiceConfig(name(), part, target, mode=0o400))
            parts.append(target)
        template = "".join(f'{{{{config "{target}"}}}}' for target in parts)
        configs.append(
            ServiceConfig(name(), template.encode(), file.path, templated=True, mode=file.mode)
        )
    return configs
