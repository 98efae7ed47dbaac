"""DockerSwarmEngine against a scripted docker-py API: what it sends, how it reads answers."""

from typing import Any

import docker.errors
import pytest

from pipes_docker.dockerapi.services import DockerSwarmEngine
from pipes_docker.errors import PipesDockerEngineError, PipesDockerLaunchError
from pipes_docker.swarm.engine import ServiceConfig, ServiceSpec

from .docker_fakes import FakeDockerClient, Script, api_error


def engine_with(api_version: str = "1.45", **api: Any) -> DockerSwarmEngine:
    client = FakeDockerClient(version=lambda: {"ApiVersion": api_version}, **api)
    return DockerSwarmEngine(client)  # type: ignore[arg-type]


def spec(**changes: Any) -> ServiceSpec:
    values: dict[str, Any] = {
        "image": "job:1",
        "name": "pipes-run-job-cafe0001",
        "command": ["python", "job.py"],
        "env": {"A": "1", "DAGSTER_PIPES_CONTEXT": "x"},
        "labels": {"io.pipes-docker.managed": "true"},
        "configs": [ServiceConfig("pipes-c-000", b"{}", "/dagster-pipes/context.json")],
        "options": {"constraints": ["node.role==worker"], "networks": ["host"]},
        "stop_grace_seconds": 2.5,
    }
    values.update(changes)
    return ServiceSpec(**values)


def test_a_job_is_one_never_restarted_task_of_a_replicated_job_service() -> None:
    create = Script({"ID": "svc1"})
    engine = engine_with(create_service=create)

    assert engine.create_service(spec(), ["cfg1"]) == "svc1"

    (kwargs,) = [create_kwargs for create_kwargs in _calls(create)]
    template = kwargs["task_template"]
    container = template["ContainerSpec"]
    assert kwargs["mode"] == {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}
    assert template["RestartPolicy"]["Condition"] == "none"
    assert container["Args"] == ["python", "job.py"]  # the image's ENTRYPOINT stays
    assert container.get("Command") is None
    assert sorted(container["Env"]) == ["A=1", "DAGSTER_PIPES_CONTEXT=x"]
    assert container["Labels"] == {"io.pipes-docker.managed": "true"}
    assert container["StopGracePeriod"] == 2_500_000_000
    assert container["Init"] is True
    (config,) = container["Configs"]
    assert config["ConfigID"] == "cfg1"
    assert config["File"]["Name"] == "/dagster-pipes/context.json"
    assert template["Placement"]["Constraints"] == ["node.role==worker"]
    assert kwargs["labels"] == {"io.pipes-docker.managed": "true"}


def test_a_manager_older_than_engine_24_gets_a_replicated_service_of_one_task() -> None:
    create = Script({"ID": "svc1"})
    engine = engine_with(api_version="1.41", create_service=create)

    engine.create_service(spec(), ["cfg1"])

    assert engine.service_mode() == "replicated"
    # docker-py spells this mode's key in lower case; the engine's JSON decoding ignores case.
    assert _calls(create)[0]["mode"] == {"replicated": {"Replicas": 1}}


def test_a_manager_without_a_leader_for_a_moment_is_retried() -> None:
    create = Script(api_error(503, "rpc error: swarm does not have a leader"), {"ID": "svc1"})
    engine = engine_with(create_service=create)

    assert engine.create_service(spec(), ["cfg1"]) == "svc1"
    assert create.calls == 2


def test_a_retried_create_that_went_through_adopts_its_own_service() -> None:
    ours = {"ID": "svc1", "Spec": {"Name": spec().name, "Labels": dict(spec().labels)}}
    engine = engine_with(
        create_service=Script(api_error(409, "name conflicts with an existing object")),
        services=Script([ours]),
    )

    assert engine.create_service(spec(), ["cfg1"]) == "svc1"


def test_a_name_taken_by_someone_elses_service_is_a_clear_launch_error() -> None:
    theirs = {"ID": "svc9", "Spec": {"Name": spec().name, "Labels": {"team": "other"}}}
    engine = engine_with(
        create_service=Script(api_error(409, "name conflicts with an existing object")),
        services=Script([theirs]),
    )

    with pytest.raises(PipesDockerLaunchError, match=r"already exists .* is not this run's"):
        engine.create_service(spec(), ["cfg1"])


def test_an_unknown_service_kwarg_is_a_launch_error_naming_it() -> None:
    engine = engine_with(create_service=Script({"ID": "svc1"}))

    with pytest.raises(PipesDockerLaunchError, match=r"Invalid service_kwargs.*colour"):
        engine.create_service(spec(options={"colour": "blue"}), ["cfg1"])


def test_a_templated_config_asks_for_golang_templating() -> None:
    create = Script({"ID": "cfg1"})
    engine = engine_with(create_config=create)

    engine.create_config(ServiceConfig("c", b'{{config "/p"}}', "/f", templated=True), {})
    engine.create_config(ServiceConfig("d", b"{}", "/g"), {})

    first, second = _calls(create)
    assert first["templating"] == {"name": "golang"}
    assert second["templating"] is None


def test_the_newest_task_is_read_with_its_exit_code_node_and_error() -> None:
    tasks = [
        {"ID": "t-old", "Version": {"Index": 3}, "Status": {"State": "rejected"}},
        {
            "ID": "t-new",
            "Version": {"Index": 9},
            "NodeID": "node-w",
            "Status": {
                "State": "failed",
                "Err": "task: non-zero exit (3)",
                "ContainerStatus": {"ContainerID": "c1", "ExitCode": 3},
            },
        },
    ]
    engine = engine_with(tasks=Script(tasks))

    task = engine.task("svc1")

    assert task is not None
    assert (task.id, task.state, task.exit_code, task.node_id) == ("t-new", "failed", 3, "node-w")
    assert task.ended and task.started
    assert task.container_id == "c1"


def test_a_removed_service_has_no_task() -> None:
    engine = engine_with(tasks=Script(docker.errors.NotFound("service svc1 not found")))

    assert engine.task("svc1") is None


def _calls(script: Script) -> list[dict[str, Any]]:
    return script.kwargs


def test_an_engine_that_is_no_swarm_manager_is_refused_at_once_not_retried() -> None:
    refusal = api_error(503, 'This node is not a swarm manager. Use "docker swarm init" ...')
    create = Script(refusal)
    engine = engine_with(create_service=create)

    with pytest.raises(PipesDockerEngineError, match="is not a Swarm manager") as caught:
        engine.create_service(spec(), ["cfg1"])

    assert not caught.value.transient
    assert create.calls == 1
