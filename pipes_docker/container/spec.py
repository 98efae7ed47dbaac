"""A run's job as a container: docker-py ``containers.create`` keywords, merged and checked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipes_docker.backend import JobSpec
from pipes_docker.container.engine import ContainerSpec
from pipes_docker.environment import environment_dict
from pipes_docker.errors import PipesDockerConfigError

__all__ = [
    "check_container_kwargs",
    "container_spec",
    "merge_container_kwargs",
]

# Keywords pipes-docker must control to keep its guarantees.
_RESERVED_KWARGS = frozenset(
    {"image", "command", "detach", "auto_remove", "remove", "stdout", "stderr", "stream"}
)


def check_container_kwargs(kwargs: Mapping[str, Any]) -> None:
    reserved = sorted(_RESERVED_KWARGS & set(kwargs))
    if reserved:
        raise PipesDockerConfigError(
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
            **environment_dict(client_kwargs["environment"]),
            **environment_dict(run_kwargs["environment"]),
        }
    if "labels" in client_kwargs and "labels" in run_kwargs:
        merged["labels"] = {**client_kwargs["labels"], **run_kwargs["labels"]}
    if "volumes" in client_kwargs and "volumes" in run_kwargs:
        merged["volumes"] = [
            *_normalize_volumes(client_kwargs["volumes"]),
            *_normalize_volumes(run_kwargs["volumes"]),
        ]
    return merged


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


def container_spec(job: JobSpec) -> ContainerSpec:
    options = dict(job.options)
    volumes = _normalize_volumes(options.pop("volumes", None))
    options.setdefault("init", True)  # forwards SIGTERM to the job and reaps its children
    # The output is captured from the attach stream; a log driver would write it all to disk a
    # second time (about 4x the cost on a 100 MB flood), unless it must be read again after a
    # reattach (keep_output: the engine's default driver). A user's log_config wins.
    if not job.keep_output:
        options.setdefault("log_config", {"type": "none", "config": {}})
    return ContainerSpec(
        image=job.image,
        name=job.name,
        command=job.command,
        env=job.env,
        labels=job.labels,
        mounts=list(job.mounts),
        volumes=volumes,
        options=options,
        files=list(job.files),
    )
