"""Past one host: Pipes jobs as Docker Swarm ``replicated-job`` services.

The same parts as the single-host client, on a scheduler: the Swarm seam (``engine``), the
service spec and the configs that carry files (``spec``), the launcher that drives one job
(``launcher``) and the client that composes them (``client``). Channels, message parsing,
demultiplexing, errors and the retry policy are the single-host client's own.
"""

from pipes_docker.swarm.client import PipesDockerSwarmClient

__all__ = ["PipesDockerSwarmClient"]
