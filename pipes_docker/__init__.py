"""pipes-docker: run Dagster Pipes jobs in Docker containers.

The public surface is what ``__all__`` lists; the modules behind it are private.
"""

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
