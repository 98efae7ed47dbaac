"""PipesDockerClient driven through real Dagster materializations, on the in-memory engine.

Each container is a Python function (see ``fakes.py``) that does what a Pipes job in an image
does: decode its bootstrap env vars, read the context, append messages to the mounted file,
print to stdout/stderr and exit.
"""

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import dagster_pipes
import orjson
import pytest
from dagster import (
    DagsterInstance,
    EnvVar,
    PipesEnvContextInjector,
)
from dagster_pipes import decode_param

from pipes_docker import (
    MANAGED_LABEL,
    PipesDockerClient,
    PipesDockerConfigError,
    PipesDockerContainerError,
    PipesDockerEngineError,
    PipesDockerImageError,
    PipesDockerLaunchError,
    PipesDockerTimeoutError,
    wait_for_removals,
)
from pipes_docker.backend import JobSpec, RunTarget
from pipes_docker.container.backend import ContainerBackend
from pipes_docker.container.engine import ContainerSpec, JobExit
from tests import jobs
from tests.jobs import error_of, metadata_of, warnings_logged

from .fakes import FakeContainer, FakeEngine, exits_with, never_exits

IMAGE = "registry.example/team/job:1.2"


# -- what a Pipes job inside the container does ----------------------------------------------


def pipes_context(box: FakeContainer) -> dict[str, Any]:
    """Decode DAGSTER_PIPES_CONTEXT: the context inline, or in the file it points at."""
    params = decode_param(box.env["DAGSTER_PIPES_CONTEXT"])
    if "data" in params:
        return params["data"]  # type: ignore[no-any-return]
    return orjson.loads(box.read_file(params["path"]))  # type: ignore[no-any-return]


def send(box: FakeContainer, *messages: tuple[str, Mapping[str, Any]], raw: bytes = b"") -> None:
    """Write messages (and optionally raw bytes first) where DAGSTER_PIPES_MESSAGES says."""
    params = decode_param(box.env["DAGSTER_PIPES_MESSAGES"])
    lines = b"".join(
        orjson.dumps({"__dagster_pipes_version": "0.1", "method": method, "params": body}) + b"\n"
        for method, body in messages
    )
    if params.get("stdio") == "stderr":
        box.stderr(raw + lines)
        return
    with open(box.host_path(params["path"]), "ab") as file:
        file.write(raw + lines)


def pipes_job(
    *,
    metadata: Mapping[str, Any] | None = None,
    stdout: Sequence[str] = (),
    stderr: Sequence[str] = (),
    exit: int | JobExit = 0,
    before: Callable[[FakeContainer], None] | None = None,
) -> Callable[[ContainerSpec, FakeContainer], int | JobExit]:
    """A container that speaks Pipes: opens, reports one materialization, closes, exits."""

    def behaviour(spec: ContainerSpec, box: FakeContainer) -> int | JobExit:
        context = pipes_context(box)
        if before is not None:
            before(box)
        send(
            box,
            ("opened", {"extras": {}}),
            (
                "report_asset_materialization",
                {
                    "asset_key": context["asset_keys"][0],
                    "metadata": {
                        key: {"raw_value": value, "type": "__infer__"}
                        for key, value in (metadata or {}).items()
                    },
                    "data_version": None,
                },
            ),
            ("closed", {}),
        )
        for line in stdout:
            box.stdout(line + "\n")
        for line in stderr:
            box.stderr(line + "\n")
        return exit

    return behaviour


# -- running an asset whose body calls the client --------------------------------------------

run_asset = partial(jobs.run_asset, image=IMAGE)


# -- the happy path ------------------------------------------------------------------------


def test_reported_metadata_and_run_metadata_reach_the_materialization(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(pipes_job(metadata={"rows": 42, "source": "s3://bucket/key"}))

    result = run_asset(client_for(engine))

    metadata = metadata_of(result)
    container = engine.only
    assert metadata["rows"] == 42
    assert metadata["source"] == "s3://bucket/key"
    assert metadata["pipes_docker/image"] == IMAGE
    assert metadata["pipes_docker/image_id"] == "sha256:" + "ab" * 32
    assert metadata["pipes_docker/container_id"] == container.id
    assert metadata["pipes_docker/container_name"] == container.spec.name
    assert metadata["pipes_docker/exit_code"] == 0
    assert isinstance(metadata["pipes_docker/duration_seconds"], float)
    assert 0 <= metadata["pipes_docker/duration_seconds"] < 10


def test_bootstrap_env_points_at_container_paths_that_hold_the_context(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    seen: dict[str, Any] = {}

    def record(box: FakeContainer) -> None:
        seen["context_param"] = decode_param(box.env["DAGSTER_PIPES_CONTEXT"])
        seen["messages_param"] = decode_param(box.env["DAGSTER_PIPES_MESSAGES"])
        seen["context"] = pipes_context(box)

    engine = FakeEngine(pipes_job(before=record))
    result = run_asset(client_for(engine), extras={"date": "2024-01-01"}, command=["run", "--x"])

    assert result.success
    assert seen["context_param"] == {"path": "/dagster-pipes/context.json"}
    assert seen["messages_param"] == {"path": "/dagster-pipes/messages"}
    assert seen["context"]["asset_keys"] == ["job"]
    assert seen["context"]["extras"] == {"date": "2024-01-01"}
    assert seen["context"]["run_id"] == result.run_id
    assert engine.only.spec.command == ["run", "--x"]
    [mount] = engine.only.spec.mounts
    assert mount.container_path == "/dagster-pipes"


@pytest.mark.parametrize("as_list", [False, True], ids=["environment-dict", "environment-list"])
def test_env_precedence_and_bootstrap_vars_cannot_be_overridden(
    client_for: Callable[..., PipesDockerClient], as_list: bool
) -> None:
    kwargs_env: Mapping[str, str] = {"B": "kwargs", "C": "kwargs", "DAGSTER_PIPES_MESSAGES": "x"}
    engine = FakeEngine(pipes_job())
    client = client_for(
        engine,
        env={"A": "client", "B": "client", "C": "client", "D": "client"},
        container_kwargs={
            "environment": [f"{k}={v}" for k, v in kwargs_env.items()] if as_list else kwargs_env
        },
    )

    result = run_asset(client, env={"C": "run", "DAGSTER_PIPES_CONTEXT": "mine"})

    assert result.success
    env = engine.only.env
    assert (env["A"], env["B"], env["C"], env["D"]) == ("client", "kwargs", "run", "client")
    assert decode_param(env["DAGSTER_PIPES_CONTEXT"]) == {"path": "/dagster-pipes/context.json"}
    assert decode_param(env["DAGSTER_PIPES_MESSAGES"]) == {"path": "/dagster-pipes/messages"}
    assert "environment" not in engine.only.spec.options


def test_labels_mark_the_container_as_managed_and_name_the_run(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(pipes_job())
    client = client_for(
        engine, container_kwargs={"labels": {"team": "data", MANAGED_LABEL: "false"}}
    )

    result = run_asset(client)

    labels = engine.only.spec.labels
    assert labels[MANAGED_LABEL] == "true"
    assert labels["io.pipes-docker.dagster-run-id"] == result.run_id
    assert labels["io.pipes-docker.dagster-step-key"] == "job"
    assert labels["team"] == "data"
    assert result.run_id[:8] in engine.only.spec.name


def test_container_kwargs_pass_through_and_run_kwargs_win(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(pipes_job())
    client = client_for(engine, container_kwargs={"user": "1000", "network_mode": "none"})

    run_asset(client, container_kwargs={"network_mode": "bridge", "mem_limit": "1g"})

    options = engine.only.spec.options
    assert options["user"] == "1000"
    assert options["network_mode"] == "bridge"
    assert options["mem_limit"] == "1g"
    assert options["init"] is True


def test_output_is_attached_before_the_container_starts(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(pipes_job())

    run_asset(client_for(engine))

    # The probe (is the temp dir shared?) runs once per engine, before the first create. The
    # image is trusted to be there, and looked up for the metadata only once the job runs.
    assert engine.ops() == [
        "probe_bind_mount",
        "create",
        "attach",
        "start",
        "image_id",
        "usage",
        "wait",
        "remove",
    ]


def test_stdout_and_stderr_land_on_the_matching_process_streams(
    client_for: Callable[..., PipesDockerClient], capsys: pytest.CaptureFixture[str]
) -> None:
    engine = FakeEngine(
        pipes_job(stdout=["container says hi", "caf\u00e9 \U0001f600"], stderr=["container warns"])
    )

    run_asset(client_for(engine))

    out, err = capsys.readouterr()
    assert "container says hi\ncaf\u00e9 \U0001f600\n" in out
    assert "container warns\n" in err
    assert "container warns" not in out
    assert "container says hi" not in err


def test_forward_stdio_false_keeps_process_streams_clean(
    client_for: Callable[..., PipesDockerClient], capsys: pytest.CaptureFixture[str]
) -> None:
    engine = FakeEngine(pipes_job(stdout=["quiet please"], stderr=["hush"]))

    run_asset(client_for(engine, forward_stdio=False))

    out, err = capsys.readouterr()
    assert "quiet please" not in out + err
    assert "hush" not in out + err


def test_log_dir_keeps_each_stream_in_its_own_file(
    client_for: Callable[..., PipesDockerClient], tmp_path: Path
) -> None:
    engine = FakeEngine(pipes_job(stdout=["out 1", "out 2"], stderr=["err 1"]))

    result = run_asset(client_for(engine, log_dir=str(tmp_path / "logs")))

    directory = tmp_path / "logs" / engine.only.spec.name
    assert (directory / "stdout.log").read_text() == "out 1\nout 2\n"
    assert (directory / "stderr.log").read_text() == "err 1\n"
    metadata = metadata_of(result)
    assert metadata["pipes_docker/stdout_log"] == str(directory / "stdout.log")
    assert metadata["pipes_docker/stderr_log"] == str(directory / "stderr.log")


def test_malformed_message_line_is_logged_as_a_warning_and_the_rest_arrives(
    client_for: Callable[..., PipesDockerClient], instance: DagsterInstance
) -> None:
    engine = FakeEngine(
        pipes_job(metadata={"rows": 7}, before=lambda box: send(box, raw=b"{garbage\n"))
    )

    result = run_asset(client_for(engine), instance=instance)

    assert metadata_of(result)["rows"] == 7
    [warning] = [w for w in warnings_logged(instance, result.run_id) if "pipes-docker" in w]
    assert "line 1" in warning
    assert "not valid JSON" in warning


def test_job_that_does_not_speak_pipes_succeeds_without_a_warning(
    client_for: Callable[..., PipesDockerClient], instance: DagsterInstance
) -> None:
    def legacy(spec: ContainerSpec, box: FakeContainer) -> int:
        box.stdout("plain script output\n")
        return 0

    result = run_asset(client_for(FakeEngine(legacy)), instance=instance)

    assert result.success
    assert metadata_of(result)["pipes_docker/exit_code"] == 0
    assert not any(
        "did not receive any messages" in w for w in warnings_logged(instance, result.run_id)
    )
    infos = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("did not receive any messages" in message for message in infos)


def injected_file(box: FakeContainer, name: str) -> bytes:
    first = box.env["PYTHONPATH"].split(":")[0]
    return box.read_file(f"{first}/dagster_pipes/{name}")


@pytest.mark.parametrize(
    ("image_pythonpath", "user_pythonpath", "kept"),
    [(None, None, None), ("/app", None, "/app"), ("/app", "/mine:/lib", "/mine:/lib")],
    ids=["none", "image", "user-over-image"],
)
def test_inject_pipes_puts_the_installed_dagster_pipes_first_on_pythonpath(
    client_for: Callable[..., PipesDockerClient],
    image_pythonpath: str | None,
    user_pythonpath: str | None,
    kept: str | None,
) -> None:
    seen: dict[str, Any] = {}

    def record(box: FakeContainer) -> None:
        seen["pythonpath"] = box.env["PYTHONPATH"]
        seen["init"] = injected_file(box, "__init__.py")

    engine = FakeEngine(
        pipes_job(before=record),
        image_env={"PYTHONPATH": image_pythonpath} if image_pythonpath else {},
    )
    env = {"PYTHONPATH": user_pythonpath} if user_pythonpath else {}

    result = run_asset(client_for(engine), inject_pipes=True, env=env)

    assert result.success
    entries = seen["pythonpath"].split(":")
    assert ":".join(entries[1:]) == (kept or "")
    assert seen["init"] == Path(dagster_pipes.__file__).read_bytes()
    # Copied in before start, not bind-mounted: injection works on remote engines too.
    assert not [m for m in engine.only.spec.mounts if m.container_path.startswith(entries[0])]
    assert "copy_files" in engine.ops()
    # The image is made sure of by name once; its env is read by the id that found (which the
    # docker engine answers from that inspect).
    looked_up = [(op, arg) for op, arg in engine.calls if op in ("image_id", "image_env")]
    assert looked_up[:2] == [("image_id", IMAGE), ("image_env", f"sha256:{'ab' * 32}")]


def test_without_inject_pipes_the_image_is_left_as_it_is(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(pipes_job(), image_env={"PYTHONPATH": "/app"})

    run_asset(client_for(engine))

    assert "PYTHONPATH" not in engine.only.env
    assert [m.container_path for m in engine.only.spec.mounts] == ["/dagster-pipes"]


# -- failures: each one diagnosed, nothing left behind -----------------------------------------


def test_nonzero_exit_error_names_image_container_code_and_stderr_tail(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    secret = "s3cr3t-t0ken-value"
    stderr = [f"err-{i:02d}" for i in range(30)] + ["ValueError: bad input"]
    engine = FakeEngine(pipes_job(stderr=stderr, stdout=["some progress"], exit=3))
    client = client_for(engine, env={"API_TOKEN": secret})

    with pytest.raises(PipesDockerContainerError) as caught:
        run_asset(client, env={"RUN_SECRET": secret + "-run"})

    message = str(caught.value)
    assert "exited with code 3" in message
    assert IMAGE in message
    assert engine.only.id[:12] in message
    assert "ValueError: bad input" in message
    assert "err-11" in message  # the last 20 lines of stderr ...
    assert "err-10" not in message  # ... and no more
    assert "some progress" not in message
    assert secret not in message
    assert caught.value.exit_code == 3
    assert engine.live_containers() == []


def test_error_quotes_stdout_when_stderr_is_empty(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(pipes_job(stdout=["fatal: could not open input"], exit=2))

    with pytest.raises(PipesDockerContainerError) as caught:
        run_asset(client_for(engine))

    assert "stdout" in str(caught.value)
    assert "fatal: could not open input" in str(caught.value)


def test_error_says_when_the_container_wrote_nothing(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(exits_with(1))

    with pytest.raises(PipesDockerContainerError, match="wrote nothing"):
        run_asset(client_for(engine))


def test_exit_code_137_is_reported_as_sigkill(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(pipes_job(exit=137))

    with pytest.raises(PipesDockerContainerError) as caught:
        run_asset(client_for(engine))

    assert "exited with code 137" in str(caught.value)
    assert "SIGKILL" in str(caught.value)
    assert "OOM" not in str(caught.value)


def test_oom_kill_is_reported_with_the_memory_limit(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(pipes_job(exit=JobExit(137, oom_killed=True)))

    with pytest.raises(PipesDockerContainerError) as caught:
        run_asset(client_for(engine), container_kwargs={"mem_limit": "64m"})

    message = str(caught.value)
    assert "OOM" in message
    assert "64.0 MiB" in message
    assert "mem_limit" in message  # says what to change
    assert caught.value.oom_killed


def test_failed_step_error_in_dagster_carries_the_diagnosis(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(pipes_job(stderr=["Traceback: boom"], exit=3))

    result = run_asset(client_for(engine), raise_on_error=False)

    assert not result.success
    assert "exited with code 3" in error_of(result)
    assert "Traceback: boom" in error_of(result)


def test_container_is_removed_after_success_and_failure(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    ok, failing = FakeEngine(pipes_job()), FakeEngine(pipes_job(exit=1))

    run_asset(client_for(ok))
    run_asset(client_for(failing), raise_on_error=False)

    for engine in (ok, failing):
        assert engine.ops()[-1] == "remove"
        assert engine.live_containers() == []


def test_start_failure_raises_launch_error_and_removes_the_container(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    error = PipesDockerLaunchError(
        "Starting container failed: port is already allocated",
        image=IMAGE,
        target=RunTarget("container", "x"),
    )
    engine = FakeEngine(pipes_job(), start_error=error)

    with pytest.raises(PipesDockerLaunchError, match="port is already allocated"):
        run_asset(client_for(engine))

    assert engine.ops() == [
        "probe_bind_mount",
        "create",
        "attach",
        "start",
        "remove",
    ]
    assert engine.live_containers() == []


def test_create_failure_raises_launch_error_and_leaves_nothing(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    error = PipesDockerLaunchError("Creating failed: no such network", image=IMAGE)
    engine = FakeEngine(pipes_job(), create_error=error)

    with pytest.raises(PipesDockerLaunchError, match="no such network"):
        run_asset(client_for(engine))

    assert engine.ops() == ["probe_bind_mount", "create"]


def test_timeout_stops_and_removes_the_container(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(never_exits)

    with pytest.raises(PipesDockerTimeoutError) as caught:
        run_asset(client_for(engine), timeout_seconds=0.3)

    assert "timed out after 0.3 seconds" in str(caught.value)
    assert engine.only.id[:12] in str(caught.value)
    assert IMAGE in str(caught.value)
    ops = engine.ops()
    assert "stop" in ops
    assert ops.index("stop") < ops.index("remove")
    assert engine.live_containers() == []


def test_container_that_finishes_in_time_is_not_stopped(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(pipes_job())

    result = run_asset(client_for(engine), timeout_seconds=30)

    assert result.success
    assert "stop" not in engine.ops()


def test_default_temp_dir_is_removed_after_the_run() -> None:
    failing = FakeEngine(pipes_job(exit=1))
    ok = FakeEngine(pipes_job())

    run_asset(PipesDockerClient(engine=ok))
    run_asset(PipesDockerClient(engine=failing), raise_on_error=False)

    for engine in (ok, failing):
        io_dir = Path(engine.only.spec.mounts[0].host_path)
        assert not io_dir.exists()
        assert not io_dir.parent.exists()
        assert io_dir.parent.name.startswith("pipes-docker-")


# -- configuration checked before anything runs -----------------------------------------------


@pytest.mark.parametrize("key", ["auto_remove", "detach", "image", "command", "remove"])
def test_reserved_container_kwargs_are_rejected_up_front(key: str) -> None:
    with pytest.raises(ValueError, match=key):
        PipesDockerClient(engine=FakeEngine(), container_kwargs={key: True})


def test_reserved_run_container_kwargs_fail_before_a_container_exists(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(pipes_job())

    with pytest.raises(ValueError, match="auto_remove"):
        run_asset(client_for(engine), container_kwargs={"auto_remove": True})

    assert engine.calls == []


def test_pull_policy_never_with_missing_image_fails_without_a_container(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(pipes_job(), image_present=False)

    with pytest.raises(PipesDockerImageError) as caught:
        run_asset(client_for(engine, pull_policy="never"))

    assert IMAGE in str(caught.value)
    assert "never" in str(caught.value)
    assert caught.value.image == IMAGE
    assert "create" not in engine.ops()
    assert "pull" not in engine.ops()


def test_missing_image_is_pulled_when_the_engine_says_so(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(pipes_job(), image_present=False)

    result = run_asset(client_for(engine))

    assert result.success
    # The probe is the first to need the image here (nothing is probed yet).
    assert engine.ops()[:6] == [
        "probe_bind_mount",
        "image_id",
        "pull",
        "image_id",
        "probe_bind_mount",
        "create",
    ]
    assert metadata_of(result)["pipes_docker/image_id"] == "sha256:" + "ab" * 32


def test_image_removed_after_the_probe_is_pulled_at_create(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(pipes_job())
    client = client_for(engine)
    run_asset(client)  # probes: the answer is kept
    engine.images_present = False
    engine.calls.clear()

    result = run_asset(client)

    assert result.success
    assert engine.ops()[:5] == ["create", "image_id", "pull", "image_id", "create"]


def test_an_image_the_engine_cannot_describe_costs_its_metadata_not_the_run(
    client_for: Callable[..., PipesDockerClient], instance: DagsterInstance
) -> None:
    engine = FakeEngine(pipes_job())
    engine.image_id_error = PipesDockerEngineError("the engine hiccuped")

    result = run_asset(client_for(engine), instance=instance)

    assert result.success
    metadata = metadata_of(result)
    assert "pipes_docker/image_id" not in metadata
    assert metadata["pipes_docker/image"] == IMAGE
    # Looked up while the job ran (quietly), then once more after it, with a warning.
    assert engine.ops().count("image_id") == 2
    assert any(
        "Could not look up image" in w and "the engine hiccuped" in w
        for w in warnings_logged(instance, result.run_id)
    )


def test_pull_policy_never_fails_at_create_with_a_missing_image(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(pipes_job())
    client = client_for(engine, pull_policy="never")
    run_asset(client)  # probes: the answer is kept
    engine.images_present = False

    with pytest.raises(PipesDockerImageError, match="pull_policy is 'never'"):
        run_asset(client)

    assert "pull" not in engine.ops()
    assert engine.live_containers() == []


def test_pull_policy_always_pulls_a_present_image(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(pipes_job())

    run_asset(client_for(engine, pull_policy="always"))

    assert engine.ops()[:4] == ["pull", "image_id", "probe_bind_mount", "create"]


def test_pull_failure_fails_without_a_container(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    error = PipesDockerImageError(f"Pulling image {IMAGE!r} failed: denied", image=IMAGE)
    engine = FakeEngine(pipes_job(), image_present=False, pull_error=error)

    with pytest.raises(PipesDockerImageError, match="denied"):
        run_asset(client_for(engine))

    assert "create" not in engine.ops()


def test_invalid_pull_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="pull_policy"):
        PipesDockerClient(engine=FakeEngine(), pull_policy="sometimes")  # type: ignore[arg-type]


def test_engine_and_docker_client_together_are_rejected() -> None:
    with pytest.raises(ValueError, match="not both"):
        PipesDockerClient(engine=FakeEngine(), docker_client=object())  # type: ignore[arg-type]


# -- known bugs ------------------------------------------------------------------------------


def test_asset_run_emits_no_deprecation_warning(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(pipes_job())

    result = run_asset(client_for(engine), every_warning_is_an_error=True)

    assert result.success


# -- sweeping containers left by orchestrators that died -------------------------------------


def leftover(
    engine: FakeEngine, *, host: str, pid: str, age_hours: float, pidns: str | None = None
) -> str:
    """A managed container as a run on ``host`` in process ``pid`` would have labelled it."""
    labels = {
        MANAGED_LABEL: "true",
        "io.pipes-docker.orchestrator-host": host,
        "io.pipes-docker.orchestrator-pid": pid,
        "io.pipes-docker.orchestrator-pidns": os.readlink("/proc/self/ns/pid")
        if pidns is None
        else pidns,
    }
    spec = ContainerSpec(image=IMAGE, name="left", command=None, env={}, labels=labels)
    created = engine.create(spec)
    engine.containers[created.id].created = time.time() - age_hours * 3600
    return created.id


def dead_pid() -> str:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return str(process.pid)


def test_remove_orphans_removes_containers_of_dead_local_orchestrators() -> None:
    engine = FakeEngine()
    host = socket.gethostname()
    orphan = leftover(engine, host=host, pid=dead_pid(), age_hours=0)
    live = leftover(engine, host=host, pid=str(os.getpid()), age_hours=0)
    unmanaged = engine.create(
        ContainerSpec(image=IMAGE, name="theirs", command=None, env={}, labels={"x": "y"})
    ).id

    removed = PipesDockerClient(engine=engine).remove_orphans()

    assert removed == [orphan]
    assert sorted(engine.live_containers()) == sorted([live, unmanaged])


def test_remove_orphans_keeps_containers_of_another_pid_namespace_on_the_same_host() -> None:
    # Orchestrator containers on host networking share the hostname, not their pids: a pid
    # that is dead here may be alive there.
    engine = FakeEngine()
    theirs = leftover(
        engine, host=socket.gethostname(), pid=dead_pid(), age_hours=0, pidns="pid:[1]"
    )

    removed = PipesDockerClient(engine=engine).remove_orphans()

    assert removed == []
    assert engine.live_containers() == [theirs]


def test_remove_orphans_removes_old_containers_of_other_hosts() -> None:
    engine = FakeEngine()
    old = leftover(engine, host="elsewhere", pid="1", age_hours=7)
    recent = leftover(engine, host="elsewhere", pid="1", age_hours=1)

    removed = PipesDockerClient(engine=engine).remove_orphans(older_than=timedelta(hours=6))

    assert removed == [old]
    assert engine.live_containers() == [recent]


def test_remove_orphans_with_zero_age_removes_every_managed_container() -> None:
    engine = FakeEngine()
    ours = [
        leftover(engine, host=socket.gethostname(), pid=str(os.getpid()), age_hours=0),
        leftover(engine, host="elsewhere", pid="1", age_hours=0),
    ]

    removed = PipesDockerClient(engine=engine).remove_orphans(older_than=timedelta(0))

    assert sorted(removed) == sorted(ours)
    assert engine.live_containers() == []


class SlowRemove(FakeEngine):
    """Removal waits until the test lets it go (``release``); 30 s at most."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()
        self.removing = threading.Event()

    def remove(self, container_id: str) -> None:
        self.removing.set()
        self.release.wait(30)
        super().remove(container_id)


def test_run_returns_before_the_removal_ends_and_the_container_is_still_removed(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = SlowRemove(pipes_job(metadata={"n": 1}))

    result = run_asset(client_for(engine), settle=False)

    assert metadata_of(result)["n"] == 1
    assert engine.removing.is_set()  # begun, and not waited for
    assert [c.removed for c in engine.containers.values()] == [False]
    engine.release.set()
    assert wait_for_removals(timeout=10)
    assert engine.live_containers() == []


def test_a_failed_run_returns_only_after_its_container_is_removed(
    client_for: Callable[..., PipesDockerClient], instance: DagsterInstance
) -> None:
    engine = SlowRemove(exits_with(3))
    letting_go = threading.Timer(0.3, engine.release.set)  # a removal that takes its time
    letting_go.start()

    result = run_asset(client_for(engine), instance=instance, raise_on_error=False, settle=False)

    assert not result.success
    # Read as is, without waiting for removals: a failed run leaves nothing behind.
    assert [c.removed for c in engine.containers.values()] == [True]
    letting_go.join()


class FailingRemove(FakeEngine):
    def remove(self, container_id: str) -> None:
        self._record("remove", container_id)
        raise PipesDockerEngineError("engine went away while removing")


def test_a_removal_that_fails_after_a_good_run_is_a_warning_naming_the_container(
    client_for: Callable[..., PipesDockerClient], caplog: pytest.LogCaptureFixture
) -> None:
    engine = FailingRemove(pipes_job(metadata={"n": 1}))

    with caplog.at_level(logging.WARNING, logger="pipes_docker"):
        result = run_asset(client_for(engine))

    assert metadata_of(result)["n"] == 1  # the job's outcome stands
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "while removing" in w and "container" in w and "pipes-docker sweep" in w for w in warnings
    ), warnings


def test_run_metadata_tells_the_engine_view_and_what_the_job_used(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(pipes_job())
    engine.digests = ["registry.example/team/job@sha256:" + "cd" * 32]
    engine.usage_figures = {"peak_memory_bytes": 52_428_800, "cpu_seconds": 1.25}

    metadata = metadata_of(run_asset(client_for(engine)))

    assert metadata["pipes_docker/image_digest"] == engine.digests[0]
    assert metadata["pipes_docker/engine"] == engine.address
    assert metadata["pipes_docker/engine_source"] == "context fake (DOCKER_CONTEXT)"
    assert metadata["pipes_docker/peak_memory_bytes"] == 52_428_800
    assert metadata["pipes_docker/cpu_seconds"] == 1.25
    assert "pipes_docker/read_bytes" not in metadata  # not reported: left out, not faked


def test_an_image_built_locally_has_no_digest_and_none_is_made_up(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    metadata = metadata_of(run_asset(client_for(FakeEngine(pipes_job()))))

    assert "pipes_docker/image_digest" not in metadata
    assert not any(key.endswith(("memory_bytes", "cpu_seconds")) for key in metadata)


def test_a_program_missing_from_the_image_is_a_launch_error_not_a_job_failure(
    client_for: Callable[..., PipesDockerClient], instance: DagsterInstance
) -> None:
    # With init=True (the default) docker-init reports the failed exec and exits 127.
    def missing(spec: ContainerSpec, box: FakeContainer) -> int:
        box.stderr("[FATAL tini (7)] exec /no/such/binary failed: No such file or directory\n")
        return 127

    result = run_asset(
        client_for(FakeEngine(missing)),
        instance=instance,
        raise_on_error=False,
        command=["/no/such/binary"],
    )

    error = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
    assert error is not None
    assert error.cause is not None
    assert error.cause.cls_name == "PipesDockerLaunchError"
    assert "/no/such/binary: No such file or directory" in error.cause.message
    assert "Check the command" in error.cause.message
    infos = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert not any("does not speak Pipes" in message for message in infos)
    assert any("the job never ran" in message for message in infos)


def test_a_job_whose_own_shell_exits_127_is_still_a_job_failure(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    def script(spec: ContainerSpec, box: FakeContainer) -> int:
        box.stderr("sh: 1: frobnicate: not found\n")
        return 127

    with pytest.raises(PipesDockerContainerError, match="code 127"):
        run_asset(client_for(FakeEngine(script)))


def test_a_run_that_never_created_its_job_does_not_blame_pipes(
    client_for: Callable[..., PipesDockerClient], instance: DagsterInstance
) -> None:
    error = PipesDockerLaunchError("Creating failed: bad mem_limit", image=IMAGE)
    engine = FakeEngine(pipes_job(), create_error=error)

    result = run_asset(client_for(engine), instance=instance, raise_on_error=False)

    assert not result.success
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert not any("does not speak Pipes" in message for message in messages)
    assert any("the job never ran" in message for message in messages)


def test_envvar_values_are_resolved_in_the_run_on_client_run_and_kwargs(
    client_for: Callable[..., PipesDockerClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIP_CLIENT", "from-client")
    monkeypatch.setenv("TRIP_RUN", "from-run")
    monkeypatch.setenv("TRIP_KWARGS", "from-kwargs")
    engine = FakeEngine(pipes_job())
    client = client_for(
        engine,
        env={"A": EnvVar("TRIP_CLIENT")},
        container_kwargs={"environment": {"C": EnvVar("TRIP_KWARGS")}},
    )

    result = run_asset(client, env={"B": EnvVar("TRIP_RUN")})

    assert result.success
    env = engine.only.env
    assert (env["A"], env["B"], env["C"]) == ("from-client", "from-run", "from-kwargs")


@pytest.mark.parametrize("on", ["client", "run"])
def test_an_envvar_whose_variable_is_unset_fails_naming_the_key_and_variable(
    client_for: Callable[..., PipesDockerClient], on: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRIP_UNSET", raising=False)
    engine = FakeEngine(pipes_job())
    env = {"SECRET": EnvVar("TRIP_UNSET")}
    client = client_for(engine, env=env if on == "client" else None)

    with pytest.raises(PipesDockerConfigError, match=r"\['SECRET'\] is EnvVar\('TRIP_UNSET'\)"):
        run_asset(client, env=env if on == "run" else None)

    assert engine.containers == {}


# -- a drop-in for dagster-docker's PipesDockerClient ------------------------------------------


def test_dagster_dockers_positional_constructor_arguments_keep_their_meaning(
    pipes_root: Path,
) -> None:
    # dagster-docker: PipesDockerClient(env, registry, context_injector, message_reader).
    engine = FakeEngine(pipes_job(), image_present=False)
    registry = {"url": "registry.example", "username": "u", "password": "client-secret"}
    injector = PipesEnvContextInjector()
    client = PipesDockerClient({"A": "client"}, registry, injector, None, engine=engine)

    result = run_asset(client)

    assert result.success
    assert engine.only.env["A"] == "client"
    assert engine.pull_auths == [
        {"username": "u", "password": "client-secret", "serveraddress": "registry.example"}
    ]


def test_the_image_to_pull_later_shows_no_credentials() -> None:
    # The pull waits until the engine says it lacks the image: what holds the credentials until
    # then must not show them when printed or logged.
    engine = FakeEngine(image_present=False)
    backend = ContainerBackend(
        engine, registry={"url": "r.example", "username": "u", "password": "hunter2"}
    )

    image = backend.prepare_image(IMAGE)
    spec = JobSpec(image=image, name="n", command=None, env={}, labels={})

    assert "hunter2" not in repr(image) and "hunter2" not in repr(spec)
    assert "hunter2" not in repr(image.ensure)
    assert image.ensure is not None
    image.ensure()
    assert engine.pull_auths == [
        {"username": "u", "password": "hunter2", "serveraddress": "r.example"}
    ]


def test_a_runs_registry_is_used_for_its_pull_over_the_clients(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(pipes_job())
    client = client_for(
        engine,
        registry={"url": "r.example", "username": "c", "password": "client-secret"},
        pull_policy="always",
    )

    run_asset(client, registry={"url": "r.example", "username": "r", "password": "run-secret"})
    run_asset(client)

    assert [auth["password"] if auth else None for auth in engine.pull_auths] == [
        "run-secret",
        "client-secret",
    ]


def test_registry_credentials_may_be_envvars(
    client_for: Callable[..., PipesDockerClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIP_REGISTRY_PASSWORD", "from-env")
    engine = FakeEngine(pipes_job(), image_present=False)
    registry = {"url": "r.example", "username": "u", "password": EnvVar("TRIP_REGISTRY_PASSWORD")}

    run_asset(client_for(engine, registry=registry))

    assert engine.pull_auths == [
        {"username": "u", "password": "from-env", "serveraddress": "r.example"}
    ]


def test_a_registry_without_credentials_is_a_config_error_naming_what_is_missing(
    client_for: Callable[..., PipesDockerClient],
) -> None:
    engine = FakeEngine(pipes_job(), image_present=False)

    with pytest.raises(PipesDockerConfigError, match="registry needs password"):
        run_asset(client_for(engine), registry={"url": "r.example", "username": "u"})

    assert "pull" not in engine.ops()
