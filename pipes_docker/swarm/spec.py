"""A run's job as a Swarm service: ``services.create`` keywords merged and checked.

Files the task needs (a context too large for an environment variable) travel as Swarm configs:
one per file up to the manager's cap of 500 KiB per config; a larger file is cut into parts of that
size and joined again on the node by a templated config, so the task sees one whole file.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from pipes_docker.backend import ContainerFile
from pipes_docker.options import OptionRules
from pipes_docker.ownership import LABEL_PREFIX
from pipes_docker.swarm.engine import ServiceConfig

__all__ = [
    "CONFIG_PART_BYTES",
    "SERVICE_LABEL",
    "SERVICE_OPTIONS",
    "service_configs",
    "service_name",
]

# swarmkit refuses a config over 500 KiB (MaxConfigSize); parts stay a little under it.
CONFIG_PART_BYTES = 500 * 1000
# On a config: the name of the service it was made for (the orphan sweep).
SERVICE_LABEL = f"{LABEL_PREFIX}.service"

_NAME_LIMIT = 63

SERVICE_OPTIONS = OptionRules(
    name="service_kwargs",
    reserved=frozenset({"image", "command", "args", "mode", "restart_policy"}),
    why_reserved="pipes-docker runs every job as a replicated-job service of one task that is"
    " never restarted.",
    env_key="env",
    mappings=("labels", "container_labels"),
    lists=("configs", "secrets", "constraints", "mounts", "networks"),
)


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
