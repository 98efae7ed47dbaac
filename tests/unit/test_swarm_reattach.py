"""Reattach on Swarm: a retried step adopts the service its earlier attempt launched.

A crashed attempt is played by a manager that stops answering that attempt (as if its run
worker died mid-run, SIGKILLed): its next look at the task raises, and nothing it then asks
(stop, remove) reaches the Swarm. The service runs on, its labels naming an orchestrator that
is gone. Dagster's own step retry runs the step again, in this process.
"""

import dataclasses
import threading
import time
from collections.abc import Iterator
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

from pipes_docker import PipesDockerSwarmClient
from pipes_docker.ownership import PID_LABEL
from pipes_docker.swarm.engine import ServiceSpec, TaskStatus

from .swarm_fakes import FakeSwarmEngine, FakeTask, send

DEAD_PID = "999999999"


class WorkerDies(Exception):
    """The first attempt's run worker dies while its service's task runs."""


class CrashOnce(FakeSwarmEngine):
    """The first service's orchestrator dies once its task runs and its output is followed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.crashed: str | None = None
        self._looks: dict[str, int] = {}

    def task(self, service_id: str) -> TaskStatus | None:
        status = super().task(service_id)
        if self.crashed is None and status is not None and status.started:
            self._looks[service_id] = self._looks.get(service_id, 0) + 1
            if self._looks[service_id] > 1:  # start() saw it run; the crash comes in wait()
                self.crashed = service_id
                self._orphan(service_id)
                raise WorkerDies("the run worker died")
        return status

    def _orphan(self, service_id: str) -> None:
        """Its labels now name a dead orchestrator, as they would after a SIGKILL."""
        service = self.services[service_id]
        service.spec = dataclasses.replace(
            service.spec, labels={**service.spec.labels, PID_LABEL: DEAD_PID}
        )
        for follower, _ in service.followers:
            follower.end()  # its connection died with the worker

    def remove_service(self, service_id: str) -> None:
        if service_id == self.crashed and self._looks.get("adopted") is None:
            raise WorkerDies("the dead worker removes nothing")
        super().remove_service(service_id)

    def remove_config(self, config_id: str) -> None:
        if self.crashed is not None and self._looks.get("adopted") is None:
            crashed_configs = self.services[self.crashed].config_ids
            if config_id in crashed_configs:
                raise WorkerDies("the dead worker removes nothing")
        super().remove_config(config_id)

    def adopting(self) -> None:
        """From now on a live orchestrator drives the crashed service."""
        self._looks["adopted"] = 1

    def creates(self) -> int:
        return sum(op.startswith("create_service") for op in self.ops)


def messages_job(release: threading.Event, exit_code: int = 0) -> Any:
    """Logs "before", sends custom message "first", waits, then "after" and "second"."""

    def behaviour(spec: ServiceSpec, task: FakeTask) -> int:
        send(
            task,
            ("opened", {"extras": {}}),
            ("log", {"message": "before", "level": "INFO"}),
            ("report_custom_message", {"payload": "first"}),
        )
        task.stdout("output before\n")
        release.wait(10)
        send(
            task,
            ("log", {"message": "after", "level": "INFO"}),
            ("report_custom_message", {"payload": "second"}),
            ("closed", {}),
        )
        task.stdout("output after\n")
        return exit_code

    return behaviour


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral() as instance:
        yield instance


class Attempts:
    """Runs one asset with one step retry; what each attempt's invocation received."""

    def __init__(self, engine: CrashOnce, **client_kwargs: Any) -> None:
        self.engine = engine
        self.client = PipesDockerSwarmClient(engine=engine, **client_kwargs)
        self.received: list[list[Any]] = []
        self.reattached: list[bool] = []
        self.before_retry: list[Any] = []

    def run(self, instance: DagsterInstance) -> Any:
        @asset(name="job", retry_policy=RetryPolicy(max_retries=1))
        def job(context: AssetExecutionContext) -> MaterializeResult:
            if context.retry_number > 0:
                for hook in self.before_retry:
                    hook()
                self.engine.adopting()
            invocation = self.client.run(context=context, image="job:1")
            self.received.append(list(invocation.get_custom_messages()))
            return invocation.get_materialize_result()

        return materialize([job], instance=instance, raise_on_error=False)


def logs(instance: DagsterInstance, run_id: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id) if e.dagster_event is None]


def test_a_retried_step_adopts_the_running_service_and_reads_every_message_once(
    instance: DagsterInstance,
) -> None:
    release = threading.Event()
    engine = CrashOnce(messages_job(release))
    attempts = Attempts(engine)
    attempts.before_retry.append(lambda: threading.Timer(0.5, release.set).start())

    result = attempts.run(instance)

    assert result.success
    assert engine.creates() == 1  # the job's task ran once
    assert attempts.received == [["first", "second"]]  # from the service's logs, each once
    (materialization,) = result.asset_materializations_for_node("job")
    assert materialization.metadata["pipes_docker/reattached"].value is True
    assert materialization.metadata["pipes_docker/service_id"].value == engine.crashed
    lines = logs(instance, result.run_id)
    assert lines.count("after") == 1
    assert any(f"reattached to service {engine.only.spec.name}" in line for line in lines)
    assert engine.live_services == []
    assert engine.live_configs == []  # the lease too


def test_a_service_that_ended_well_meanwhile_is_adopted_not_run_again(
    instance: DagsterInstance,
) -> None:
    release = threading.Event()
    engine = CrashOnce(messages_job(release))
    attempts = Attempts(engine)

    def let_it_end() -> None:
        release.set()
        while engine.only.state != "complete":
            time.sleep(0.01)

    attempts.before_retry.append(let_it_end)

    result = attempts.run(instance)

    assert result.success
    assert engine.creates() == 1
    assert attempts.received == [["first", "second"]]
    (materialization,) = result.asset_materializations_for_node("job")
    assert materialization.metadata["pipes_docker/reattached"].value is True
    assert materialization.metadata["pipes_docker/exit_code"].value == 0
    assert engine.live_services == []
    assert engine.live_configs == []


def test_a_service_that_failed_is_removed_and_the_job_runs_afresh(
    instance: DagsterInstance,
) -> None:
    release = threading.Event()
    first, second = messages_job(release, exit_code=3), messages_job(release)
    engine = CrashOnce(lambda spec, task: (second if engine.crashed else first)(spec, task))
    attempts = Attempts(engine)

    def let_it_fail() -> None:
        release.set()
        crashed = engine.services[str(engine.crashed)].task
        while crashed is not None and crashed.state != "failed":
            time.sleep(0.01)

    attempts.before_retry.append(let_it_fail)

    result = attempts.run(instance)

    assert result.success
    assert engine.creates() == 2
    assert attempts.received == [["first", "second"]]
    (materialization,) = result.asset_materializations_for_node("job")
    assert "pipes_docker/reattached" not in materialization.metadata
    assert any("exited with code 3" in line for line in logs(instance, result.run_id))
    assert engine.live_services == []
    assert engine.live_configs == []


def test_reattach_false_runs_the_job_afresh(instance: DagsterInstance) -> None:
    release = threading.Event()
    engine = CrashOnce(messages_job(release))
    attempts = Attempts(engine, reattach=False)
    attempts.before_retry.append(release.set)

    result = attempts.run(instance)

    assert result.success
    assert engine.creates() == 2
    assert engine.live_services == [engine.crashed]  # the lost run's service, nobody's now
    engine.remove_service(str(engine.crashed))


def test_the_orphan_sweep_spares_the_service_while_its_adopter_holds_the_lease(
    instance: DagsterInstance,
) -> None:
    release = threading.Event()
    engine = CrashOnce(messages_job(release))
    attempts = Attempts(engine)
    swept: list[str] = []

    def sweep_during_the_adopted_run() -> None:
        def sweep() -> None:
            deadline = time.monotonic() + 5  # without a lease, sweep anyway: it must fail
            while not any("pipes-lease-" in c[0].name for c in list(engine.configs.values())):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            swept.extend(PipesDockerSwarmClient(engine=engine).remove_orphans())
            release.set()

        threading.Thread(target=sweep, daemon=True).start()

    attempts.before_retry.append(sweep_during_the_adopted_run)

    result = attempts.run(instance)

    assert result.success
    assert engine.crashed not in swept  # its labels name a dead orchestrator, but it is leased
    assert engine.creates() == 1
    assert attempts.received == [["first", "second"]]
    assert engine.live_services == []
    assert engine.live_configs == []
