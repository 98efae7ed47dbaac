"""A Dagster code location whose asset runs its work in a Docker container.

Load it with `dagster dev -m examples.definitions`, or materialize it once from the command
line with `python -m examples.demo`.
"""

from dagster import AssetExecutionContext, Definitions, MaterializeResult, asset

from pipes_docker import PipesDockerClient

EXAMPLE_IMAGE = "pipes-docker-example:latest"


@asset(description="Word counts computed by a Pipes job in a Docker container.")
def word_counts(
    context: AssetExecutionContext, docker_pipes: PipesDockerClient
) -> MaterializeResult:
    return docker_pipes.run(
        context=context,
        image=EXAMPLE_IMAGE,
        extras={"top_n": 3},
    ).get_materialize_result()


defs = Definitions(
    assets=[word_counts],
    resources={
        # The job needs no network; "none" also works on engines without a bridge network.
        "docker_pipes": PipesDockerClient(container_kwargs={"network_mode": "none"}),
    },
)
