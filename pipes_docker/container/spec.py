"""A run's job as a container: docker-py ``containers.create`` keywords, merged and checked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipes_docker.backend import JobSpec
from pipes_docker.container.engine import ContainerSpec
from pipes_docker.options import OptionRules

__all__ = ["CONTAINER_OPTIONS", "container_spec"]

CONTAINER_OPTIONS = OptionRules(
    name="container_kwargs",
    reserved=frozenset(
        {"image", "command", "detach", "auto_remove", "remove", "stdout", "stderr", "stream"}
    ),
    why_reserved="pipes-docker controls these to attach to, wait for and remove the container.",
    env_key="environment",
    lists=("volumes",),
    normalize=lambda volumes: _normalize_volumes(volumes),
)


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
        image=job.image.name,
        name=job.name,
        command=job.command,
        env=job.env,
        labels=job.labels,
        mounts=list(job.mounts),
        volumes=volumes,
        options=options,
        files=list(job.files),
    )
