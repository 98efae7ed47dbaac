"""The code location of the compose dev stack (``examples/compose/``).

It runs in the stack's ``code`` service, a container that talks to the host's engine through the
mounted Docker socket, so every job container is a sibling on the host. Nothing here names a
path of this checkout: inside the stack, host paths do not exist. The jobs come in images.

* ``word_counts``: the example Pipes job (``images/example``); it writes a line to stdout and
  one to stderr, which show up in the step's compute logs, and reports metadata.
* ``failing_report``: a container that writes to stderr and exits with code 3; the run fails
  with the exit code and the stderr tail.

Settings, read from the environment (``docker-compose.yml`` and ``mounted-channel.yml`` set
them):

* ``PIPES_DOCKER_DEV_PROJECT``: the compose project; every job container gets it as the label
  ``io.pipes-docker.dev-stack``, so ``scripts/dev.sh down`` can find leftovers.
* ``PIPES_DOCKER_TEMP_DIR_ROOT`` and ``PIPES_DOCKER_HOST_TEMP_DIR_ROOT``: a dir mounted into the
  ``code`` service and its path on the host. When the host path is set, the client is told the
  mapping (both are then required) and uses the mounted channel; otherwise the default probes
  the engine and streams.
"""

import os
from typing import Any

from dagster import AssetExecutionContext, Definitions, MaterializeResult, asset

from pipes_docker import PipesDockerAutoChannel, PipesDockerClient

EXAMPLE_IMAGE = "pipes-docker-example:latest"
TEST_IMAGE = "pipes-docker-testjob:latest"
STACK_LABEL = "io.pipes-docker.dev-stack"

FAILING_JOB = """
import sys
print("loading the partner feed")
print("partner feed is empty: nothing to load", file=sys.stderr)
sys.exit(3)
"""


def docker_pipes_client() -> PipesDockerClient:
    container_kwargs: dict[str, Any] = {"network_mode": "none"}
    project = os.environ.get("PIPES_DOCKER_DEV_PROJECT")
    if project:
        container_kwargs["labels"] = {STACK_LABEL: project}
    host_temp_dir_root = os.environ.get("PIPES_DOCKER_HOST_TEMP_DIR_ROOT")
    if not host_temp_dir_root:
        return PipesDockerClient(container_kwargs=container_kwargs)
    channel = PipesDockerAutoChannel(
        temp_dir_root=os.environ["PIPES_DOCKER_TEMP_DIR_ROOT"],
        host_temp_dir_root=host_temp_dir_root,
    )
    return PipesDockerClient(container_kwargs=container_kwargs, channel=channel)


@asset(description="Word counts from the example Pipes job, run in a sibling container.")
def word_counts(
    context: AssetExecutionContext, docker_pipes: PipesDockerClient
) -> MaterializeResult:
    return docker_pipes.run(
        context=context, image=EXAMPLE_IMAGE, extras={"top_n": 3}
    ).get_materialize_result()


@asset(description="A job that fails: its container writes to stderr and exits with code 3.")
def failing_report(
    context: AssetExecutionContext, docker_pipes: PipesDockerClient
) -> MaterializeResult:
    return docker_pipes.run(
        context=context, image=TEST_IMAGE, command=["python", "-c", FAILING_JOB]
    ).get_materialize_result()


defs = Definitions(
    assets=[word_counts, failing_report],
    resources={"docker_pipes": docker_pipes_client()},
)
