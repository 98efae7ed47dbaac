"""PipesDockerSwarmClient on the fake Swarm: context, messages, output, errors, cleanup."""

import _thread
import os
import secrets
import threading
import time
import warnings
from collections.abc import Mapping
from datetime import timedelta
from functools import partial
from typing import Any

import orjson
import pytest
from dagster import (
    AssetExecutionContext,
    MaterializeResult,
    asset,
    materialize,
)
from dagster_pipes import decode_param

from pipes_docker import (
    PipesDockerMountedChannel,
    PipesDockerSwarmClient,
)
from pipes_docker.backend import ContainerFile, JobSpec, RunImage
from pipes_docker.demux import LineSink
from pipes_docker.errors import PipesDockerTimeoutError
from pipes_docker.launcher import JobLauncher
from pipes_docker.ownership import HOST_LABEL, MANAGED_LABEL, PID_LABEL, PIDNS_LABEL, pid_namespace
from pipes_docker.swarm import backend as swarm_backend
from pipes_docker.swarm.backend import SwarmBackend
from pipes_docker.swarm.engine import ServiceSpec, TaskStatus
from pipes_docker.swarm.spec import (
    CONFIG_PART_BYTES,
    service_configs,
    service_name,
)
from tests import jobs
from tests.jobs import error_of, metadata_of

from .swarm_fakes import FakeNode, FakeSwarmEngine, FakeTask, send, swarm_job

WORKER_ONLY = {"constraints": ["node.role==worker"]}


run_asset = partial(jobs.run_asset, image="job:1")


def assert_nothing_left(engine: FakeSwarmEngine) -> None:
    assert engine.live_services == []
    assert engine.live_configs == []


def context_of(task: FakeTask) -> Mapping[str, Any]:
    params = decode_param(task.env["DAGSTER_PIPES_CONTEXT"])
    if "data" in params:
        return params["data"]  # type: ignore[no-any-return]
    return orjson.loads(task.read_file(params["path"]))  # type: ignore[no-any-return]


# -- the round trip ---------------------------------------------------------------------------


def test_a_job_runs_as_a_replicated_job_on_the_node_the_constraints_pick(
    capfd: pytest.CaptureFixture[str],
) -> None:
    engine = FakeSwarmEngine(swarm_job(metadata={"rows": 7}, stdout=["out 1"], stderr=["err 1"]))
    client = PipesDockerSwarmClient(engine=engine, service_kwargs=WORKER_ONLY)

    result = run_asset(client, command="python job.py --day 'mon day'")

    metadata = metadata_of(result)
    assert metadata["rows"] == 7
    assert metadata["pipes_docker/node"] == "worker-1"
    assert metadata["pipes_docker/exit_code"] == 0
    assert metadata["pipes_docker/transport"] == "streamed"
    assert metadata["pipes_docker/service_mode"] == "replicated-job"
    task = engine.only
    assert task.spec.command == ["python", "job.py", "--day", "mon day"]
    assert task.spec.options["constraints"] == ["node.role==worker"]
    assert task.spec.labels[MANAGED_LABEL] == "true"
    assert task.spec.labels["io.pipes-docker.dagster-step-key"] == "job"
    assert task.spec.labels["io.pipes-docker.dagster-run-id"] == result.run_id
    out, err = capfd.readouterr()
    assert "out 1\n" in out and "err 1" not in out
    assert "err 1\n" in err and "out 1" not in err
    assert "__dagster_pipes_version" not in out + err
    assert_nothing_left(engine)


def test_env_layers_merge_and_the_bootstrap_variables_win() -> None:
    engine = FakeSwarmEngine(swarm_job())
    client = PipesDockerSwarmClient(
        engine=engine,
        env={"A": "client", "B": "client"},
        service_kwargs={"env": ["B=kwargs", "C=kwargs"]},
    )

    run_asset(client, env={"C": "run", "DAGSTER_PIPES_MESSAGES": "mine"})

    env = engine.only.env
    assert (env["A"], env["B"], env["C"]) == ("client", "kwargs", "run")
    assert decode_param(env["DAGSTER_PIPES_MESSAGES"]) == {"stdio": "stderr"}


def test_service_kwargs_may_not_take_over_what_the_client_controls() -> None:
    with pytest.raises(ValueError, match="mode"):
        PipesDockerSwarmClient(engine=FakeSwarmEngine(), service_kwargs={"mode": "global"})


def test_a_channel_that_needs_a_shared_filesystem_is_refused_clearly() -> None:
    client = PipesDockerSwarmClient(
        engine=FakeSwarmEngine(swarm_job()), channel=PipesDockerMountedChannel()
    )

    result = run_asset(client, raise_on_error=False)

    assert "PipesDockerChannelError" in error_of(result)
    assert "shares no filesystem" in error_of(result)


# -- context and messages ---------------------------------------------------------------------


def test_a_1_mb_context_travels_as_configs_under_the_cap_joined_on_the_node() -> None:
    seen: dict[str, Any] = {}

    def job(spec: ServiceSpec, task: FakeTask) -> int:
        seen.update(context_of(task))
        return swarm_job()(spec, task)

    engine = FakeSwarmEngine(job)
    big = secrets.token_hex(500_000)

    run_asset(PipesDockerSwarmClient(engine=engine), extras={"big": big})

    assert seen["extras"]["big"] == big
    configs = engine.only.spec.configs
    assert len(configs) >= 3
    assert all(len(config.data) <= CONFIG_PART_BYTES for config in configs)
    assert [c.templated for c in configs] == [False] * (len(configs) - 1) + [True]
    assert_nothing_left(engine)


def test_a_small_context_travels_inline_with_no_config() -> None:
    engine = FakeSwarmEngine(swarm_job())

    run_asset(PipesDockerSwarmClient(engine=engine), extras={"small": 1})

    assert engine.only.spec.configs == []
    assert not any(op.startswith("create_config") for op in engine.ops)


def test_files_small_and_large_become_configs_that_rebuild_them_exactly() -> None:
    small = ContainerFile("/a/small", b"tiny", mode=0o600)
    large = ContainerFile("/a/large", os.urandom(3 * CONFIG_PART_BYTES + 17))

    configs = service_configs([small, large])
    spec = ServiceSpec(image="i", name="n", command=None, env={}, labels={}, configs=configs)
    task = FakeTask("t", service=type("S", (), {"spec": spec})())  # type: ignore[arg-type]

    assert task.read_file("/a/small") == b"tiny"
    assert task.read_file("/a/large") == large.data
    assert len({config.name for config in configs}) == len(configs) == 6
    assert configs[0].mode == 0o600


def test_a_5_mb_message_split_into_16_kib_log_pieces_arrives_whole() -> None:
    blob = secrets.token_hex(2_500_000)

    def job(spec: ServiceSpec, task: FakeTask) -> int:
        send(task, ("opened", {"extras": {}}))
        send(
            task,
            (
                "report_asset_materialization",
                {
                    "asset_key": context_of(task)["asset_keys"][0],
                    "metadata": {"blob": {"raw_value": blob, "type": "text"}},
                    "data_version": None,
                },
            ),
        )
        send(task, ("closed", {}))
        return 0

    engine = FakeSwarmEngine(job)

    result = run_asset(PipesDockerSwarmClient(engine=engine))

    assert metadata_of(result)["blob"] == blob
    assert len(engine.only.log) > 300  # it did travel in pieces


@pytest.mark.parametrize("follow_limit", [0, 1, 5_000, 123_457])
def test_what_the_live_stream_missed_arrives_once_from_the_read_after_the_end(
    follow_limit: int, tmp_path: Any
) -> None:
    def job(spec: ServiceSpec, task: FakeTask) -> int:
        send(task, ("opened", {"extras": {}}))
        for i in range(500):
            task.stdout(f"out {i}\n")
            task.stderr(f"err {i}\n")
            send(task, ("log", {"message": f"message {i}", "level": "INFO"}))
        task.stdout("x" * 40_000 + "\n")
        send(task, ("closed", {}))
        return 0

    engine = FakeSwarmEngine(job, follow_limit=follow_limit, seed=follow_limit)
    client = PipesDockerSwarmClient(engine=engine, log_dir=str(tmp_path), forward_stdio=False)

    result = run_asset(client)

    assert result.success
    (directory,) = list(tmp_path.iterdir())
    stdout = (directory / "stdout.log").read_text().splitlines()
    stderr = (directory / "stderr.log").read_text().splitlines()
    assert stdout == [f"out {i}" for i in range(500)] + ["x" * 40_000]
    assert stderr == [f"err {i}" for i in range(500)]
    assert engine.ops.count("logs once") == 1


def test_every_message_arrives_exactly_once_when_the_live_stream_lags() -> None:
    def job(spec: ServiceSpec, task: FakeTask) -> int:
        send(task, ("opened", {"extras": {}}))
        for i in range(300):
            send(task, ("report_custom_message", {"payload": i}))
        send(task, ("closed", {}))
        return 0

    engine = FakeSwarmEngine(job, follow_limit=20_000)
    payloads: list[Any] = []

    @asset(name="job")
    def job_asset(context: AssetExecutionContext) -> MaterializeResult:
        invocation = PipesDockerSwarmClient(engine=engine).run(context=context, image="job:1")
        payloads.extend(invocation.get_custom_messages())
        return MaterializeResult()

    materialize([job_asset])

    assert payloads == list(range(300))


# -- status and errors ------------------------------------------------------------------------


def test_a_non_zero_exit_names_the_node_and_quotes_stderr() -> None:
    def job(spec: ServiceSpec, task: FakeTask) -> int:
        task.stderr("loading\nTraceback: boom\n")
        return 3

    engine = FakeSwarmEngine(job)

    result = run_asset(PipesDockerSwarmClient(engine=engine), raise_on_error=False)

    error = error_of(result)
    assert "PipesDockerContainerError" in error
    assert "exited with code 3" in error
    assert "on node manager-1 (image 'job:1')" in error
    assert "Traceback: boom" in error
    assert_nothing_left(engine)


def test_a_task_no_node_can_take_fails_within_the_schedule_timeout() -> None:
    engine = FakeSwarmEngine(swarm_job())
    client = PipesDockerSwarmClient(engine=engine, schedule_timeout_seconds=0.5)

    started = time.monotonic()
    result = run_asset(
        client, raise_on_error=False, service_kwargs={"constraints": ["node.labels.gpu==true"]}
    )

    assert time.monotonic() - started < 10
    error = error_of(result)
    assert "PipesDockerLaunchError" in error
    assert "did not start within 1 s" in error or "did not start within 0 s" in error
    assert "no suitable node (scheduling constraints not satisfied on 2 nodes)" in error
    assert "constraints" in error
    assert_nothing_left(engine)


def test_an_image_missing_on_the_node_fails_at_once_naming_node_and_image() -> None:
    engine = FakeSwarmEngine(
        swarm_job(), nodes=[FakeNode("n1", "worker-7", images=frozenset({"other:1"}))]
    )

    result = run_asset(PipesDockerSwarmClient(engine=engine), raise_on_error=False)

    error = error_of(result)
    assert "PipesDockerImageError" in error
    assert "No such image: job:1" in error
    assert "on node worker-7" in error
    assert_nothing_left(engine)


def test_a_timeout_removes_the_service_and_says_what_it_waited_for() -> None:
    def job(spec: ServiceSpec, task: FakeTask) -> int:
        task.stdout("working\n")
        task.removed_from_service.wait(30)
        return 143

    engine = FakeSwarmEngine(job)

    started = time.monotonic()
    result = run_asset(
        PipesDockerSwarmClient(engine=engine), raise_on_error=False, timeout_seconds=0.5
    )

    assert time.monotonic() - started < 10
    error = error_of(result)
    assert "PipesDockerTimeoutError" in error
    assert "timed out after 0.5 seconds" in error
    assert "working" in error
    assert engine.only.state == "shutdown"
    assert_nothing_left(engine)


def test_the_stop_grace_period_is_the_termination_timeout() -> None:
    engine = FakeSwarmEngine(swarm_job())

    run_asset(PipesDockerSwarmClient(engine=engine, termination_timeout_seconds=7))
    run_asset(PipesDockerSwarmClient(engine=engine, forward_termination=False))

    graces = [s.spec.stop_grace_seconds for s in engine.services.values()]
    assert graces == [7, 0]


# -- orphans ----------------------------------------------------------------------------------


def test_the_orphan_sweep_removes_services_and_configs_of_dead_orchestrators_only() -> None:
    engine = FakeSwarmEngine()
    dead = {
        MANAGED_LABEL: "true",
        HOST_LABEL: os.uname().nodename,
        PID_LABEL: "999999999",
        PIDNS_LABEL: pid_namespace(),
    }
    alive = {**dead, PID_LABEL: str(os.getpid())}
    blocker = FakeNode("n", "busy", images=frozenset())  # tasks stay pending
    engine.nodes = [blocker]
    for name, labels in (("dead-1", dead), ("alive-1", alive)):
        config_id = engine.create_config(
            service_configs([ContainerFile("/c", b"x")])[0],
            {**labels, "io.pipes-docker.service": name},
        )
        engine.create_service(
            ServiceSpec(image="job:1", name=name, command=None, env={}, labels=labels),
            [config_id],
        )
    time.sleep(0.05)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        removed = PipesDockerSwarmClient(engine=engine).remove_orphans()

    left = [s.spec.name for s in engine.services.values() if not s.removed]
    assert left == ["alive-1"]
    assert len(removed) == 2  # the dead one's service and its config
    assert len(engine.configs) == 1
    assert PipesDockerSwarmClient(engine=engine).remove_orphans(older_than=timedelta(0))
    assert_nothing_left(engine)


def test_service_names_stay_within_swarms_limit_and_keep_their_random_tail() -> None:
    long = "pipes-12345678-" + "a" * 40 + "-deadbeef"
    assert len(service_name(long)) <= 63
    assert service_name(long).endswith("-deadbeef")
    assert service_name("pipes-1-job-cafe0001") == "pipes-1-job-cafe0001"


def test_an_interrupted_run_stops_the_task_removes_everything_and_propagates() -> None:
    running = threading.Event()

    def job(spec: ServiceSpec, task: FakeTask) -> int:
        task.stdout("before the interrupt\n")
        running.set()
        task.removed_from_service.wait(30)
        return 143

    engine = FakeSwarmEngine(job)
    launcher = JobLauncher(SwarmBackend(engine))
    spec = JobSpec(
        image=RunImage("job:1"),
        command=None,
        name="pipes-interrupted",
        env={},
        labels={MANAGED_LABEL: "true"},
        files=[ContainerFile("/big", b"x" * (CONFIG_PART_BYTES + 1))],
        stop_grace_seconds=1,
    )
    stdout, stderr = LineSink(), LineSink()
    interrupted: list[BaseException] = []

    def interrupt_once_followed() -> None:
        # Once the job runs and its output is followed: the run is under way.
        running.wait(10)
        deadline = time.monotonic() + 10
        while "logs follow" not in engine.ops and time.monotonic() < deadline:
            time.sleep(0.01)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_once_followed, daemon=True).start()

    with pytest.raises(KeyboardInterrupt):
        launcher.run(spec, stdout=stdout, stderr=stderr, on_interrupt=interrupted.append)

    assert [type(exc) for exc in interrupted] == [KeyboardInterrupt]
    assert engine.only.state == "shutdown"
    assert stdout.tail_lines(5) == ["before the interrupt"]
    assert_nothing_left(engine)


def test_a_service_removed_by_someone_else_mid_run_fails_the_run_at_once() -> None:
    running = threading.Event()

    def job(spec: ServiceSpec, task: FakeTask) -> int:
        running.set()
        task.removed_from_service.wait(30)
        return 143

    engine = FakeSwarmEngine(job)

    def remove_it() -> None:
        running.wait(10)
        time.sleep(0.3)
        engine.remove_service(next(iter(engine.services)))

    threading.Thread(target=remove_it, daemon=True).start()
    started = time.monotonic()
    result = run_asset(PipesDockerSwarmClient(engine=engine), raise_on_error=False)

    assert time.monotonic() - started < 10
    assert "was removed by someone else while its task was running" in error_of(result)
    assert_nothing_left(engine)


def test_a_container_that_cannot_start_says_why_not_just_its_exit_code() -> None:
    reason = 'starting container failed: exec: "pyhton": executable file not found in $PATH'
    engine = FakeSwarmEngine(start_failure=(127, reason))

    result = run_asset(PipesDockerSwarmClient(engine=engine), raise_on_error=False)

    error = error_of(result)
    assert "exited with code 127" in error
    assert f"The engine says: {reason}" in error


def test_output_the_node_rotated_away_fails_the_run_instead_of_passing_silently() -> None:
    engine = FakeSwarmEngine(swarm_job(stdout=[f"line {i}" for i in range(50)]), kept_from=10)

    result = run_asset(PipesDockerSwarmClient(engine=engine), raise_on_error=False)

    error = error_of(result)
    assert "PipesDockerOutputError" in error
    assert "rotated or dropped output" in error
    assert_nothing_left(engine)


def test_output_rotated_away_after_the_live_stream_saw_part_of_it_fails_the_run() -> None:
    # The live stream delivers lines 0-19, the node then keeps lines 5-49: longer than what
    # arrived, so a count alone would resume at the wrong place and drop lines nobody saw.
    def job(spec: ServiceSpec, task: FakeTask) -> int:
        for i in range(50):
            task.stdout(f"line {i}\n")
        return 0

    framed = sum(8 + len(f"line {i}\n") for i in range(20))
    engine = FakeSwarmEngine(job, follow_limit=framed, kept_from=5)

    result = run_asset(PipesDockerSwarmClient(engine=engine), raise_on_error=False)

    error = error_of(result)
    assert "PipesDockerOutputError" in error
    assert "rotated or dropped output" in error
    assert_nothing_left(engine)


def test_a_stop_ends_within_grace_and_margin_however_slow_the_manager_removes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(swarm_backend, "REMOVAL_MARGIN_SECONDS", 0.5)
    manager_back = threading.Event()

    class SlowManager(FakeSwarmEngine):
        """Its task lingers after the service is removed; removing a config hangs."""

        def task_by_id(self, task_id: str) -> TaskStatus | None:
            return self.only.status()

        def remove_config(self, config_id: str) -> None:
            manager_back.wait(30)
            super().remove_config(config_id)

    def job(spec: ServiceSpec, task: FakeTask) -> int:
        task.stdout("working\n")
        manager_back.wait(30)
        return 143

    engine = SlowManager(job)
    spec = JobSpec(
        image=RunImage("job:1"),
        command=None,
        name="pipes-slow-manager",
        env={},
        labels={MANAGED_LABEL: "true"},
        files=[ContainerFile("/big", b"x" * (CONFIG_PART_BYTES + 1))],
        stop_grace_seconds=0.5,
    )

    started = time.monotonic()
    with pytest.raises(PipesDockerTimeoutError):
        JobLauncher(SwarmBackend(engine)).run(
            spec, stdout=LineSink(), stderr=LineSink(), timeout_seconds=0.3
        )
    elapsed = time.monotonic() - started

    # The timeout, the grace period and the margin, with room for a slow machine: not the
    # 30 s the manager would have taken.
    assert elapsed < 0.3 + 0.5 + 0.5 + 3
    assert "leaves the rest to the orphan sweep" in caplog.text
    manager_back.set()
    deadline = time.monotonic() + 10
    while engine.live_configs and time.monotonic() < deadline:
        time.sleep(0.05)
    assert_nothing_left(engine)
