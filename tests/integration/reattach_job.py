"""A Dagster job whose one step runs a long container, for the reattach test.

Usage: python reattach_job.py WORK_DIR TRANSPORT [RUN_ID]

Without RUN_ID, launches the job; with it, re-executes that run from failure (dagster's
``ReexecutionOptions.from_failure``). The instance is $DAGSTER_HOME's. TRANSPORT is "auto" (the
client's default channel, here mounted) or "streamed". The container logs one message and sends
one custom message, prints "container started", sleeps $PAUSE seconds, then sends a second of
each; the step logs the custom messages its invocation received.

With REATTACH_SWARM_NODE set, the step runs the job with PipesDockerSwarmClient on that node of
the Swarm whose manager DOCKER_HOST names (TRANSPORT is then "streamed", the Swarm's channel).
"""

import os
import sys
from pathlib import Path

import docker
from dagster import (
    DagsterInstance,
    OpExecutionContext,
    ReexecutionOptions,
    execute_job,
    job,
    op,
    reconstructable,
)
from dagster._core.storage.tags import RESUME_RETRY_TAG

from pipes_docker import (
    PipesDockerAutoChannel,
    PipesDockerClient,
    PipesDockerStreamedChannel,
    PipesDockerSwarmClient,
)

CONTAINER_JOB = """
import os, time
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.log.info("logged before the kill")
    pipes.report_custom_message("first")
    print("container started", flush=True)
    time.sleep(float(os.environ["PAUSE"]))
    pipes.log.info("logged after the kill")
    pipes.report_custom_message("second")
"""


def make_client() -> PipesDockerClient | PipesDockerSwarmClient:
    work_dir = Path(os.environ["REATTACH_WORK_DIR"])
    node = os.environ.get("REATTACH_SWARM_NODE")
    if node:
        return PipesDockerSwarmClient(
            docker_client=docker.from_env(),
            service_kwargs={"constraints": [f"node.hostname=={node}"], "networks": ["host"]},
            log_dir=str(work_dir / "logs"),
            termination_timeout_seconds=2,
        )
    channel = (
        PipesDockerStreamedChannel()
        if os.environ["REATTACH_TRANSPORT"] == "streamed"
        else PipesDockerAutoChannel(temp_dir_root=str(work_dir / "pipes-tmp"))
    )
    return PipesDockerClient(
        docker_client=docker.from_env(),
        channel=channel,
        container_kwargs={"network_mode": "none"},
        log_dir=str(work_dir / "logs"),
    )


@op
def long_step(context: OpExecutionContext) -> list[str]:
    invocation = make_client().run(
        context=context,
        image="pipes-docker-testjob:latest",
        command=["python", "-c", CONTAINER_JOB],
        env={"PAUSE": os.environ.get("PAUSE", "8")},
    )
    received = [str(m) for m in invocation.get_custom_messages()]
    context.log.info(f"custom messages received: {received}")
    reattached = invocation.metadata.get("pipes_docker/reattached")
    context.log.info(f"reattached: {reattached.value if reattached else False}")
    return received


@job
def reattach_job() -> None:
    long_step()


def main() -> int:
    work_dir, transport = sys.argv[1], sys.argv[2]
    os.environ["REATTACH_WORK_DIR"], os.environ["REATTACH_TRANSPORT"] = work_dir, transport
    (Path(work_dir) / "pipes-tmp").mkdir(parents=True, exist_ok=True)
    with DagsterInstance.get() as instance:
        options, tags = None, {}
        if len(sys.argv) > 3:
            options = ReexecutionOptions.from_failure(sys.argv[3], instance)
            # The UI's and the run-retry daemon's from-failure re-executions tag the new run
            # so; execute_job leaves tagging to its caller.
            tags = {RESUME_RETRY_TAG: "true"}
        result = execute_job(
            reconstructable(reattach_job),
            instance=instance,
            reexecution_options=options,
            tags=tags,
        )
        print(result.run_id)
        return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
