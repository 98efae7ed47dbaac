"""The two-node Swarm fixture itself: it forms a working cluster and its teardown leaves nothing.

The test builds its own cluster with ``two_node_swarm()`` (not the session's ``swarm``) so that
it can check, after leaving it, that no node container, veth end or socket dir is left.
"""

from typing import Any

import docker
import docker.types

from .engines import TEST_IMAGE, wait_until
from .swarm import NODE_LABEL, SwarmCluster, host_link_names, two_node_swarm

TERMINAL_TASK_STATES = {"complete", "failed", "rejected", "shutdown", "orphaned", "remove"}


def finished_tasks(service: Any) -> list[dict[str, Any]] | None:
    """The service's tasks once all are in a terminal state; None before."""
    tasks: list[dict[str, Any]] = service.tasks()
    if tasks and all(task["Status"]["State"] in TERMINAL_TASK_STATES for task in tasks):
        return tasks
    return None


def check_nodes(cluster: SwarmCluster) -> None:
    nodes = {
        node.id: (
            node.attrs["Description"]["Hostname"],
            node.attrs["Spec"]["Role"],
            node.attrs["Status"]["State"],
        )
        for node in cluster.manager.nodes.list()
    }
    assert nodes == {
        cluster.manager_node_id: (cluster.manager_hostname, "manager", "ready"),
        cluster.worker_node_id: (cluster.worker_hostname, "worker", "ready"),
    }


def check_a_job_runs_on_the_worker(cluster: SwarmCluster) -> None:
    service = cluster.manager.services.create(
        TEST_IMAGE,
        ["sh", "-c", "echo hi; echo err >&2"],
        mode=docker.types.ServiceMode("replicated-job", replicas=1),
        restart_policy=docker.types.RestartPolicy(condition="none"),
        constraints=["node.role==worker"],
        networks=["host"],
    )
    try:
        wait_until(lambda: finished_tasks(service) is not None, 60, "the job's task")
        (task,) = service.tasks()
        assert task["Status"]["State"] == "complete", task["Status"]
        assert task["Status"]["ContainerStatus"]["ExitCode"] == 0
        assert task["NodeID"] == cluster.worker_node_id
    finally:
        service.remove()
    assert cluster.manager.services.list() == []


def test_a_two_node_swarm_runs_a_job_on_its_worker_and_leaves_nothing_behind(
    docker_client: docker.DockerClient,
) -> None:
    with two_node_swarm(docker_client) as cluster:
        check_nodes(cluster)
        check_a_job_runs_on_the_worker(cluster)

    names = {cluster.manager_hostname, cluster.worker_hostname}
    node_containers = docker_client.containers.list(
        all=True, filters={"label": f"{NODE_LABEL[0]}={NODE_LABEL[1]}"}
    )
    assert [c.name for c in node_containers if c.name in names] == []
    assert set(cluster.veth_names) & host_link_names() == set()
    assert [path for path in cluster.socket_dirs if path.exists()] == []
