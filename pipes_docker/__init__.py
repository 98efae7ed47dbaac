"""pipes-docker: run Dagster Pipes jobs in Docker containers.

The public surface is what ``__all__`` lists; the modules behind it are private.

Each name is imported when first used, not with the package: Dagster runs every step in a
fresh process, which then pays only for what its step uses (``from pipes_docker import
PipesDockerClient`` does not load the Swarm client or the Dagster component).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipes_docker.channels import (
        PipesDockerArchiveContextInjector,
        PipesDockerAutoChannel,
        PipesDockerChannel,
        PipesDockerCustomChannel,
        PipesDockerFileContextInjector,
        PipesDockerMountedChannel,
        PipesDockerStdioMessageReader,
        PipesDockerStreamedChannel,
    )
    from pipes_docker.client import PipesDockerClient
    from pipes_docker.component import PipesDockerComponent, PipesDockerComponentError
    from pipes_docker.dockerapi.endpoint import PipesDockerTLSConfig
    from pipes_docker.errors import (
        PipesDockerChannelError,
        PipesDockerConfigError,
        PipesDockerContainerError,
        PipesDockerEngineError,
        PipesDockerError,
        PipesDockerFilesError,
        PipesDockerImageError,
        PipesDockerLaunchError,
        PipesDockerOutputError,
        PipesDockerOutputRuleError,
        PipesDockerReporterError,
        PipesDockerTimeoutError,
    )
    from pipes_docker.ownership import MANAGED_LABEL
    from pipes_docker.reader import PipesDockerFileMessageReader
    from pipes_docker.removals import wait_for_removals
    from pipes_docker.retrieve import PipesDockerCopyOut
    from pipes_docker.rules import PipesDockerOutputRule
    from pipes_docker.swarm import PipesDockerSwarmClient

__version__ = "0.1.0"

# Where each public name lives.
_HOMES = {
    "pipes_docker.channels": (
        "PipesDockerArchiveContextInjector",
        "PipesDockerAutoChannel",
        "PipesDockerChannel",
        "PipesDockerCustomChannel",
        "PipesDockerFileContextInjector",
        "PipesDockerMountedChannel",
        "PipesDockerStdioMessageReader",
        "PipesDockerStreamedChannel",
    ),
    "pipes_docker.client": ("PipesDockerClient",),
    "pipes_docker.component": ("PipesDockerComponent", "PipesDockerComponentError"),
    "pipes_docker.dockerapi.endpoint": ("PipesDockerTLSConfig",),
    "pipes_docker.errors": (
        "PipesDockerChannelError",
        "PipesDockerConfigError",
        "PipesDockerContainerError",
        "PipesDockerEngineError",
        "PipesDockerError",
        "PipesDockerFilesError",
        "PipesDockerImageError",
        "PipesDockerLaunchError",
        "PipesDockerOutputError",
        "PipesDockerOutputRuleError",
        "PipesDockerReporterError",
        "PipesDockerTimeoutError",
    ),
    "pipes_docker.ownership": ("MANAGED_LABEL",),
    "pipes_docker.reader": ("PipesDockerFileMessageReader",),
    "pipes_docker.removals": ("wait_for_removals",),
    "pipes_docker.retrieve": ("PipesDockerCopyOut",),
    "pipes_docker.rules": ("PipesDockerOutputRule",),
    "pipes_docker.swarm": ("PipesDockerSwarmClient",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "MANAGED_LABEL",
    "PipesDockerArchiveContextInjector",
    "PipesDockerAutoChannel",
    "PipesDockerChannel",
    "PipesDockerChannelError",
    "PipesDockerClient",
    "PipesDockerComponent",
    "PipesDockerComponentError",
    "PipesDockerConfigError",
    "PipesDockerContainerError",
    "PipesDockerCopyOut",
    "PipesDockerCustomChannel",
    "PipesDockerEngineError",
    "PipesDockerError",
    "PipesDockerFileContextInjector",
    "PipesDockerFileMessageReader",
    "PipesDockerFilesError",
    "PipesDockerImageError",
    "PipesDockerLaunchError",
    "PipesDockerMountedChannel",
    "PipesDockerOutputError",
    "PipesDockerOutputRule",
    "PipesDockerOutputRuleError",
    "PipesDockerReporterError",
    "PipesDockerStdioMessageReader",
    "PipesDockerStreamedChannel",
    "PipesDockerSwarmClient",
    "PipesDockerTLSConfig",
    "PipesDockerTimeoutError",
    "wait_for_removals",
]


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # found at once from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
