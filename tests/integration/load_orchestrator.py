"""Many Pipes runs at once from one orchestrator process, for the load tests.

Usage: python load_orchestrator.py RUNS MESSAGES TRANSPORT WORK_DIR

Starts RUNS threads; each materializes its own asset whose container reports MESSAGES custom
messages (the integers 0..MESSAGES-1). Prints one JSON line: per run, the marker, how many
messages arrived, whether they were exactly 0..MESSAGES-1 in order, and the container id.
"""

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
from dagster import AssetExecutionContext, DagsterInstance, MaterializeResult, asset, materialize

from pipes_docker import (
    PipesDockerChannel,
    PipesDockerClient,
    PipesDockerMountedChannel,
    PipesDockerStreamedChannel,
)

JOB = """
import os
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    for i in range(int(os.environ["MESSAGES"])):
        pipes.report_custom_message(i)
    pipes.report_asset_materialization(metadata={"marker": os.environ["MARKER"]})
"""


def make_client(transport: str, work_dir: Path) -> PipesDockerClient:
    channels: dict[str, PipesDockerChannel] = {
        "mounted": PipesDockerMountedChannel(temp_dir_root=str(work_dir)),
        "streamed": PipesDockerStreamedChannel(),
    }
    return PipesDockerClient(
        docker_client=docker.from_env(),
        channel=channels[transport],
        container_kwargs={"network_mode": "none"},
        forward_stdio=False,
    )


def run_many(client: PipesDockerClient, runs: int, messages: int) -> list[dict[str, Any]]:
    def one(index: int) -> dict[str, Any]:
        marker = f"run-{index}"
        seen: dict[str, Any] = {}

        @asset(name=f"load_{index}")
        def job_asset(context: AssetExecutionContext) -> MaterializeResult:
            invocation = client.run(
                context=context,
                image="pipes-docker-testjob:latest",
                command=["python", "-c", JOB],
                env={"MARKER": marker, "MESSAGES": str(messages)},
            )
            custom = list(invocation.get_custom_messages())
            seen.update(count=len(custom), exact=custom == list(range(messages)))
            return invocation.get_materialize_result()

        with DagsterInstance.ephemeral() as instance:
            result = materialize([job_asset], instance=instance, raise_on_error=False)
            ok = result.success
            metadata: dict[str, Any] = {}
            if ok:
                (materialization,) = result.asset_materializations_for_node(f"load_{index}")
                metadata = {k: v.value for k, v in materialization.metadata.items()}
        return {
            "marker": marker,
            "ok": ok,
            "reported_marker": metadata.get("marker"),
            "container_id": metadata.get("pipes_docker/container_id"),
            **seen,
        }

    with ThreadPoolExecutor(max_workers=runs) as pool:
        return list(pool.map(one, range(runs)))


def main() -> int:
    runs, messages, transport, work_dir = (
        int(sys.argv[1]),
        int(sys.argv[2]),
        sys.argv[3],
        Path(sys.argv[4]),
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    results = run_many(make_client(transport, work_dir), runs, messages)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
