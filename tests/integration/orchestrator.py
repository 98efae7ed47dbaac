"""A real orchestrator process for lifecycle tests: materializes one asset that runs a container.

Usage: python orchestrator.py MODE WORK_DIR [MARKER]

MODE "sleep": the container reports a log message, prints "container started", then sleeps, so
the test can signal or kill this process mid-run. MODE "bare-sleep": the same, but the asset
first restores SIGTERM's default action, as in an executor that does not handle SIGTERM.
MODE "quick": the container reports MARKER back as metadata, and this process prints the
materialization's metadata as JSON. The Dagster instance
lives in $DAGSTER_HOME so the test can read the event log after this process is gone.

The engine is the environment's (DOCKER_HOST). PIPES_DOCKER_TEST_CHANNEL picks the channel:
"mounted" (the default here), "auto" (the client's default) or "streamed";
PIPES_DOCKER_TEST_CONTAINER_KWARGS (JSON) replaces the container keywords;
PIPES_DOCKER_TEST_HOST_TEMP_ROOT is the engine host's path of WORK_DIR/pipes-tmp, when this
process runs in a container (the auto channel's host_temp_dir_root).
PIPES_DOCKER_TEST_SWARM_NODE, when set, runs the job with PipesDockerSwarmClient on that node
of the Swarm whose manager DOCKER_HOST names.
"""

import json
import os
import signal
import sys
from pathlib import Path

import docker
from dagster import (
    AssetExecutionContext,
    DagsterInstance,
    MaterializeResult,
    asset,
    materialize,
)

from pipes_docker import (
    PipesDockerAutoChannel,
    PipesDockerChannel,
    PipesDockerClient,
    PipesDockerMountedChannel,
    PipesDockerStreamedChannel,
    PipesDockerSwarmClient,
)

SLEEPING_JOB = """
from dagster_pipes import open_dagster_pipes
import time
with open_dagster_pipes() as pipes:
    pipes.log.info("message from the container before the signal")
    print("container started", flush=True)
    time.sleep(300)
"""

QUICK_JOB = """
import os, sys
from dagster_pipes import open_dagster_pipes
print(f"stdout line of {os.environ['MARKER']}")
print(f"stderr line of {os.environ['MARKER']}", file=sys.stderr)
with open_dagster_pipes() as pipes:
    pipes.report_asset_materialization(metadata={"marker": os.environ["MARKER"]})
"""


def main() -> int:
    mode, work_dir = sys.argv[1], Path(sys.argv[2])
    marker = sys.argv[3] if len(sys.argv) > 3 else ""
    temp_root = str(work_dir / "pipes-tmp")
    channels: dict[str, PipesDockerChannel] = {
        "mounted": PipesDockerMountedChannel(temp_dir_root=temp_root),
        "auto": PipesDockerAutoChannel(
            temp_dir_root=temp_root,
            host_temp_dir_root=os.environ.get("PIPES_DOCKER_TEST_HOST_TEMP_ROOT") or None,
        ),
        "streamed": PipesDockerStreamedChannel(),
    }
    container_kwargs = json.loads(
        os.environ.get("PIPES_DOCKER_TEST_CONTAINER_KWARGS") or '{"network_mode": "none"}'
    )
    client: PipesDockerClient | PipesDockerSwarmClient
    client = PipesDockerClient(
        docker_client=docker.from_env(),
        container_kwargs=container_kwargs,
        log_dir=str(work_dir / "logs"),
        channel=channels[os.environ.get("PIPES_DOCKER_TEST_CHANNEL", "mounted")],
        termination_timeout_seconds=5,
    )
    if os.environ.get("PIPES_DOCKER_TEST_SWARM_NODE"):
        client = PipesDockerSwarmClient(
            docker_client=docker.from_env(),
            service_kwargs={
                "constraints": [f"node.hostname=={os.environ['PIPES_DOCKER_TEST_SWARM_NODE']}"],
                "networks": ["host"],
            },
            log_dir=str(work_dir / "logs"),
            termination_timeout_seconds=5,
        )

    @asset(name="job")
    def job_asset(context: AssetExecutionContext) -> MaterializeResult:
        if mode == "bare-sleep":
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        code = QUICK_JOB if mode == "quick" else SLEEPING_JOB
        return client.run(
            context=context,
            image="pipes-docker-testjob:latest",
            command=["python", "-c", code],
            env={"MARKER": marker},
        ).get_materialize_result()

    result = materialize([job_asset], instance=DagsterInstance.get(), raise_on_error=False)
    if mode == "quick":
        (materialization,) = result.asset_materializations_for_node("job")
        print(json.dumps({k: v.value for k, v in materialization.metadata.items()}))
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
