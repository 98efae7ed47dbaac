"""Turn what a user asked for into a :class:`ServiceSpec`, and files into Swarm configs.

The environment merges as for a container (:func:`pipes_docker.spec.merge_env`), with the Pipes
bootstrap variables last; labels say which Dagster run and step made the service. Files the
task needs (a context too large for an environment variable) travel as Swarm configs: one per
file up to the manager's cap of 500 KiB per config; a larger file is cut into parts of that
size and joined again on the node by a templated config, so the task sees one whole file.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from pipes_docker.backend import ContainerFile
from pipes_docker.spec import LABEL_PREFIX, merge_env
from pipes_docker.swarm.engine import ServiceConfig, ServiceSpec

__all__ = [
    "CONFIG_PART_BYTES",
    "SERVICE_LABEL",
    "build_service_spec",
    "check_service_kwargs",
    "merge_service_kwargs",
    "pop_service_env",
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
        raise ValueError(
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
        merged["env"] = {**_env_dict(client_kwargs["env"]), **_env_dict(run_kwargs["env"])}
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


def build_service_spec(
    *,
    image: str,
    command: str | Sequence[str] | None,
    name: str,
    env_layers: Sequence[Mapping[str, str]],
    bootstrap_env: Mapping[str, str],
    labels: Mapping[str, str],
    options: dict[str, Any],
    files: Sequence[ContainerFile],
    stop_grace_seconds: float,
) -> ServiceSpec:
    env = merge_env(env_layers, bootstrap_env)
    user_labels = dict(options.pop("labels", None) or {})
    name = options.pop("name", None) or name
    return ServiceSpec(
        image=image,
        name=name,
        command=shlex.split(command) if isinstance(command, str) else command,
        env=env,
        labels={**user_labels, **labels},
        configs=service_configs(files),
        options=options,
        stop_grace_seconds=stop_grace_seconds,
    )


def pop_service_env(options: dict[str, Any]) -> Mapping[str, str]:
    """Take docker-py's ``env`` (a dict or ``KEY=VALUE`` list) out of ``options``."""
    return _env_dict(options.pop("env", None) or {})


def _env_dict(env: Any) -> dict[str, str]:
    """docker-py takes a service's ``env`` as a dict or a list of ``KEY=VALUE`` strings."""
    if isinstance(env, Mapping):
        return {str(k): str(v) for k, v in env.items()}
    return {key: value for key, _, value in (str(item).partition("=") for item in env)}
