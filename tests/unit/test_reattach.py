"""Reattach: a retried step adopts the container its earlier attempt launched, on the fake engine.

A crashed attempt is played by an engine whose wait fails once (as if the run worker died) and
that, like a SIGKILLed orchestrator, cannot clean up: stopping and removing that first container
do nothing. Dagster's own step retry then runs the step again.
"""

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from dagster import (
    AssetExecutionContext,
    DagsterInstance,
    MaterializeResult,
    RetryPolicy,
    asset,
    materialize,
)

from pipes_docker import PipesDockerClient, PipesDockerStreamedChannel
from pipes_docker.container.engine import ContainerSpec, JobExit
from pipes_docker.ownership import HOST_LABEL, LEASE_LABEL, MANAGED_LABEL, PID_LABEL, PIDNS_LABEL

from .fakes import FakeContainer, FakeEngine
from .test_client import pipes_context, send


class WorkerDies(Exception):
    """The first attempt's run worker dies while the container runs."""


class CrashOnce(FakeEngine):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.crashed: set[str] = set()
        self.first_remove_lost = True

    def wait(self, container_id: str, timeout: float) -> JobExit | None:
        if not self.crashed:
            self.crashed.add(container_id)
            raise WorkerDies("the run worker died")
        return super().wait(container_id, timeout)

    def stop(self, container_id: str, grace_seconds: float) -> None:
        if container_id in self.crashed:
            self.containers[container_id].stream.end()  # its connection died with the worker
            return
        super().stop(container_id, grace_seconds)

    def remove(self, container_id: str) -> None:
        if container_id in self.crashed and self.first_remove_lost:
            self.first_remove_lost = False
            return  # the worker died before it could clean up
        super().remove(container_id)


def slow_job(release: threading.Event, exit_code: int = 0) -> Callable[..., int]:
    def behaviour(spec: ContainerSpec, box: FakeContainer) -> int:
        context = pipes_context(box)
        send(box, ("opened", {"extras": {}}), ("log", {"message": "before", "level": "INFO"}))
        box.stdout("output before\n")
        release.wait(10)
        send(
            box,
            ("log", {"message": "after", "level": "INFO"}),
            (
                "report_asset_materialization",
                {
                    "asset_key": context["asset_keys"][0],
                    "metadata": {"n": {"raw_value": 7, "type": "__infer__"}},
                    "data_version": None,
                },
            ),
            ("closed", {}),
        )
        return exit_code

    return behaviour


def run_with_retry(client: PipesDockerClient, instance: DagsterInstance) -> Any:
    @asset(name="job", retry_policy=RetryPolicy(max_retries=1))
    def job(context: AssetExecutionContext) -> MaterializeResult:
        return client.run(context=context, image="job:1").get_materialize_result()

    return materialize([job], instance=instance, raise_on_error=False)


def log_lines(instance: DagsterInstance, run_id: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id) if e.dagster_event is None]


def test_a_retried_step_adopts_the_running_container_and_reads_it_from_the_start(
    instance: DagsterInstance,
) -> None:
    release = threading.Event()
    engine = CrashOnce(slow_job(release), shares_filesystem=False)
    client = PipesDockerClient(engine=engine, channel=PipesDockerStreamedChannel())
    threading.Timer(1.0, release.set).start()

    result = run_with_retry(client, instance)

    assert result.success
    (materialization,) = result.asset_materializations_for_node("job")
    assert materialization.metadata["n"].value == 7
    assert materialization.metadata["pipes_docker/reattached"].value is True
    assert "output_from_start" in engine.ops()  # read again from its start, not from now on
    assert len([op for op in engine.ops() if op == "create"]) == 1  # the job ran once
    lines = log_lines(instance, result.run_id)
    # The adopting attempt re-read "before" from the start (the crashed one may have read it too).
    assert lines.count("before") in (1, 2)
    assert lines.count("after") == 1
    assert any("reattached to container" in line for line in lines)
    assert engine.ops().count("create_lease") == 1
    assert engine.live_containers() == []


def test_a_container_that_failed_is_removed_and_the_job_runs_afresh(
    instance: DagsterInstance,
) -> None:
    release = threading.Event()
    release.set()
    engine = CrashOnce(shares_filesystem=False)
    first_attempt = slow_job(release, exit_code=3)
    second_attempt = slow_job(release)
    engine.behaviour = lambda spec, box: (
        first_attempt
        if not engine.live_containers()[1:] and len(engine.containers) == 1
        else second_attempt
    )(spec, box)
    client = PipesDockerClient(engine=engine, channel=PipesDockerStreamedChannel())

    result = run_with_retry(client, instance)

    assert result.success
    assert len([op for op in engine.ops() if op == "create"]) == 2
    assert engine.live_containers() == []


def test_reattach_false_launches_afresh_and_records_nothing(instance: DagsterInstance) -> None:
    release = threading.Event()
    engine = CrashOnce(slow_job(release), shares_filesystem=False)
    client = PipesDockerClient(engine=engine, channel=PipesDockerStreamedChannel(), reattach=False)
    threading.Timer(0.5, release.set).start()

    result = run_with_retry(client, instance)

    assert result.success
    assert len([op for op in engine.ops() if op == "create"]) == 2
    assert "container_state" not in engine.ops()
    for container in engine.containers.values():  # the first one's run was lost: kill it
        container._finish(137)


def test_the_orphan_sweep_spares_a_container_a_live_orchestrator_adopted() -> None:
    import os

    engine = FakeEngine()
    dead = {MANAGED_LABEL: "true", HOST_LABEL: os.uname().nodename, PID_LABEL: "999999999"}
    pidns = os.readlink("/proc/self/ns/pid")
    dead[PIDNS_LABEL] = pidns
    adopted = engine.create(ContainerSpec("job:1", "adopted", None, {}, dead)).id
    orphan = engine.create(ContainerSpec("job:1", "orphan", None, {}, dead)).id
    live = {
        MANAGED_LABEL: "true",
        HOST_LABEL: os.uname().nodename,
        PID_LABEL: str(os.getpid()),
        PIDNS_LABEL: pidns,
    }
    lease = engine.create_lease(adopted, "job:1", {**live, LEASE_LABEL: adopted})
    dead_lease = engine.create_lease(orphan, "job:1", {**dead, LEASE_LABEL: orphan})

    removed = PipesDockerClient(engine=engine).remove_orphans()

    assert set(removed) == {orphan, dead_lease}
    assert adopted in engine.live_containers()
    assert lease in engine.live_containers()


@pytest.fixture
def instance() -> Any:
    with DagsterInstance.ephemeral() as instance:
        yield instance


def test_two_containers_of_one_step_at_once_never_adopt_each_other(
    instance: DagsterInstance,
) -> None:
    release = threading.Event()
    engine = FakeEngine(slow_job(release), shares_filesystem=False)
    client = PipesDockerClient(engine=engine, channel=PipesDockerStreamedChannel())
    outcomes: list[Any] = []

    @asset(name="job")
    def job(context: AssetExecutionContext) -> MaterializeResult:
        def one() -> None:
            outcomes.append(client.run(context=context, image="job:1"))

        first = threading.Thread(target=one)
        first.start()
        while "start" not in engine.ops():
            time.sleep(0.01)
        second = threading.Thread(target=one)
        second.start()
        time.sleep(0.3)
        release.set()
        first.join()
        second.join()
        return MaterializeResult()

    result = materialize([job], instance=instance)

    assert result.success
    assert engine.ops().count("create") == 2
    assert "create_lease" not in engine.ops()
    assert engine.live_containers() == []
