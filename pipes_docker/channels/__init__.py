"""How the Pipes context travels into a container and messages travel out.

* :mod:`~pipes_docker.channels.base`: the seam every channel implements.
* :mod:`~pipes_docker.channels.mounted`: files in a bind-mounted temp dir (engine shares our files).
* :mod:`~pipes_docker.channels.streamed`: context through the API, messages on stderr (any engine).
* :mod:`~pipes_docker.channels.auto`: the default; probes the engine once and picks one of those.
* :mod:`~pipes_docker.channels.custom`: the user's own context injector and message reader.
"""

from pipes_docker.channels.auto import PipesDockerAutoChannel
from pipes_docker.channels.base import OpenChannel, PipesDockerChannel
from pipes_docker.channels.custom import PipesDockerCustomChannel, choose_channel
from pipes_docker.channels.mounted import PipesDockerFileContextInjector, PipesDockerMountedChannel
from pipes_docker.channels.streamed import (
    PipesDockerArchiveContextInjector,
    PipesDockerStdioMessageReader,
    PipesDockerStreamedChannel,
)

__all__ = [
    "OpenChannel",
    "PipesDockerArchiveContextInjector",
    "PipesDockerAutoChannel",
    "PipesDockerChannel",
    "PipesDockerCustomChannel",
    "PipesDockerFileContextInjector",
    "PipesDockerMountedChannel",
    "PipesDockerStdioMessageReader",
    "PipesDockerStreamedChannel",
    "choose_channel",
]
