"""The core cases on engines other than the host's socket, with the client's defaults.

* ``dind-tcp``: a Docker engine in a container (docker-compose.test.yml) at tcp://127.0.0.1.
  It shares no filesystem with this process, so the default channel streams.
* ``dind-ssh``: the same engine over ssh:// (docker-py's paramiko transport).
* ``podman``: Podman's Docker-compatible API. It shares this machine's files: mounted.
* ``podman-streamed`` and ``local-streamed``: the streamed channel chosen explicitly on an
  engine that could mount, so it is proven on every engine we have.

Every case checks what a user would: the messages and metadata arrived, the output landed on
the right stream, errors say why, and nothing is left on the engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from dagster import DagsterInstance

from pipes_docker import (
    MANAGED_LABEL,
    PipesDockerAutoChannel,
    PipesDockerChannel,
    PipesDockerClient,
    PipesDockerStreamedChannel,
    wait_for_removals,
)
from tests.jobs import AssetRun

from .conftest import TEST_IMAGE
from .engines import RemoteEngine, SshEngine
from .test_lifecycle import containers_of, start_orchestrator, wait_for_started_container

RunAsset = Callable[..., AssetRun]


@dataclass(frozen=True)
class Case:
    """One engine and the channel a run uses on it."""

    engine: RemoteEngine
    streamed: bool  # the streamed channel chosen explicitly

    @property
    def expected_transport(self) -> str:
        return "streamed" if self.streamed or not self.engine.shares_host_filesystem else "mounted"

    def channel(self, temp_root: Path) -> PipesDockerChannel:
        if self.streamed:
            return PipesDockerStreamedChannel()
        return PipesDockerAutoChannel(temp_dir_root=str(temp_root))

    def client(self, temp_root: Path, **kwargs: Any) -> PipesDockerClient:
        container_kwargs = {**self.engine.container_kwargs, **kwargs.pop("container_kwargs", {})}
        return PipesDockerClient(
            docker_client=self.engine.client,
            channel=self.channel(temp_root),
            container_kwargs=container_kwargs,
            **kwargs,
        )


CASES = {
    "dind-tcp": ("remote_engine", False),
    "dind-ssh": ("ssh_engine", False),
    "podman": ("podman_engine", False),
    "podman-streamed": ("podman_engine", True),
    "local-streamed": ("local_engine", True),
}


@pytest.fixture(scope="session")
def local_engine(docker_client: docker.DockerClient) -> RemoteEngine:
    return RemoteEngine(
        name="local",
        client=docker_client,
        address=os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock",
        shares_host_filesystem=True,
    )


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest, pipes_tmp: Path) -> Iterator[Case]:
    fixture, streamed = CASES[request.param]
    engine: RemoteEngine = request.getfixturevalue(fixture)
    yield Case(engine, streamed)
    assert wait_for_removals(timeout=120)
    leftovers = engine.client.containers.list(
        all=True, filters={"label": f"{MANAGED_LABEL}=true"}, ignore_removed=True
    )
    for container in leftovers:
        container.remove(force=True)
    assert not leftovers, f"left on {engine.name}: {[c.name for c in leftovers]}"


ROUND_TRIP = r"""
import json, sys
from dagster_pipes import open_dagster_pipes
print("stdout: first")
print(json.dumps({"user": "json", "on": "stderr"}), file=sys.stderr)
print("L" * 100_000, file=sys.stderr)
sys.stderr.write("progress: ")
with open_dagster_pipes() as pipes:
    pipes.log.info("log from the job")
    pipes.report_custom_message({"custom": [1, 2, 3]})
    pipes.report_asset_materialization(
        metadata={"greeting": pipes.get_extra("greeting"), "rows": 42}
    )
print("done", file=sys.stderr)
print("stdout: last")
"""


def test_round_trip_keeps_messages_and_each_stream_apart(
    case: Case, pipes_tmp: Path, run_asset: RunAsset, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_asset(case.client(pipes_tmp), ROUND_TRIP, extras={"greeting": "hello"})

    assert run.success, run.error
    assert run.metadata["greeting"] == "hello"
    assert run.metadata["rows"] == 42
    assert run.metadata["pipes_docker/transport"] == case.expected_transport
    assert "log from the job" in run.log_messages()
    out, err = capsys.readouterr()
    assert "stdout: first\n" in out and "stdout: last\n" in out
    assert '{"user": "json", "on": "stderr"}\n' in err  # a user's JSON line stays output
    assert "\n" + "L" * 100_000 + "\n" in err  # a 100 KB line stays output, whole
    assert "progress: done\n" in err  # the line a message interrupted is kept
    assert "__dagster_pipes_version" not in out + err
    assert "stdout:" not in err and "done" not in out


def test_a_5mb_message_arrives_intact(case: Case, pipes_tmp: Path, run_asset: RunAsset) -> None:
    code = """
import string
from dagster_pipes import open_dagster_pipes
value = (string.ascii_letters * 100_000)[:5_000_000]
with open_dagster_pipes() as pipes:
    pipes.report_asset_materialization(metadata={"blob": value})
"""
    run = run_asset(case.client(pipes_tmp), code)

    assert run.success, run.error
    assert run.metadata["blob"] == (string.ascii_letters * 100_000)[:5_000_000]


def test_a_1mb_incompressible_context_reaches_the_job(
    case: Case, pipes_tmp: Path, run_asset: RunAsset
) -> None:
    blob = secrets.token_urlsafe(750_000)  # 1 MB of random text: zlib cannot shrink it
    code = """
import hashlib
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    blob = pipes.get_extra("blob")
    pipes.report_asset_materialization(
        metadata={"size": len(blob), "sha": hashlib.sha256(blob.encode()).hexdigest()}
    )
"""
    run = run_asset(case.client(pipes_tmp), code, extras={"blob": blob})

    assert run.success, run.error
    assert run.metadata["size"] == len(blob) >= 1_000_000
    import hashlib

    assert run.metadata["sha"] == hashlib.sha256(blob.encode()).hexdigest()


def test_nonzero_exit_names_the_code_and_quotes_stderr_not_messages(
    case: Case, pipes_tmp: Path, run_asset: RunAsset
) -> None:
    code = """
import sys
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.log.info("about to fail")
print("loading rows", file=sys.stderr)
print("ValueError: row 7 is bad", file=sys.stderr)
sys.exit(3)
"""
    run = run_asset(case.client(pipes_tmp), code)

    assert not run.success
    assert "exited with code 3" in run.error
    assert "ValueError: row 7 is bad" in run.error
    assert TEST_IMAGE in run.error
    assert "__dagster_pipes_version" not in run.error
    assert "about to fail" in run.log_messages()


def test_a_missing_image_is_named_in_the_engines_own_words_and_leaves_nothing(
    case: Case, pipes_tmp: Path, run_asset: RunAsset
) -> None:
    # Nothing looks for the image before the container is made: each engine's refusal (Docker
    # and Podman word it differently) must still be seen for what it is, then the pull policy
    # decides (here: never pull).
    image = f"pipes-docker-absent-{secrets.token_hex(4)}:latest"

    run = run_asset(case.client(pipes_tmp, pull_policy="never"), "print(1)", image=image)

    assert not run.success
    assert f"Image {image!r} is not present on the Docker engine at" in run.error
    assert "pull_policy is 'never'" in run.error


def test_timeout_stops_the_container_and_says_so(
    case: Case, pipes_tmp: Path, run_asset: RunAsset
) -> None:
    code = "import time; print('sleeping', flush=True); time.sleep(120)"
    client = case.client(pipes_tmp, termination_timeout_seconds=2)

    started = time.monotonic()
    run = run_asset(client, code, timeout_seconds=3)

    assert not run.success
    assert "timed out after 3" in run.error
    assert "sleeping" in run.error
    assert time.monotonic() - started < 60


def test_termination_stops_reads_and_removes_the_container(case: Case, tmp_path: Path) -> None:
    engine = case.engine
    env = {
        "DOCKER_HOST": engine.address,
        "PIPES_DOCKER_TEST_CHANNEL": "streamed" if case.streamed else "auto",
        "PIPES_DOCKER_TEST_CONTAINER_KWARGS": json.dumps(_jsonable(engine.container_kwargs)),
    }
    if isinstance(engine, SshEngine):
        env["HOME"] = str(engine.home)
    process = start_orchestrator(tmp_path, "sleep", env=env)
    try:
        wait_for_started_container(engine.client, process, tmp_path)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        process.kill()
        _, stderr = process.communicate()

    assert containers_of(engine.client, process.pid) == [], stderr[-2000:]
    assert list((tmp_path / "pipes-tmp").iterdir()) == []
    assert process.returncode == 1, stderr[-2000:]
    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        (run,) = instance.get_runs()
        messages = [entry.user_message for entry in instance.all_logs(run.run_id)]
    assert "message from the container before the signal" in messages


def _jsonable(kwargs: dict[str, Any]) -> dict[str, Any]:
    """container_kwargs as JSON: docker-py takes ulimits as dicts too."""
    return {
        key: [dict(u) for u in value] if key == "ulimits" else value
        for key, value in kwargs.items()
    }


@pytest.mark.parametrize("fixture", ["remote_engine", "ssh_engine"])
def test_a_client_with_no_settings_works_from_docker_host(
    request: pytest.FixtureRequest,
    fixture: str,
    run_asset: RunAsset,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine: RemoteEngine = request.getfixturevalue(fixture)
    monkeypatch.setenv("DOCKER_HOST", engine.address)
    if isinstance(engine, SshEngine):
        monkeypatch.setenv("HOME", str(engine.home))  # where the test key and known_hosts are
    client = PipesDockerClient(container_kwargs={"network_mode": "none"})  # nothing else set

    run = run_asset(client, ROUND_TRIP, extras={"greeting": "from DOCKER_HOST"})

    assert run.success, run.error
    assert run.metadata["greeting"] == "from DOCKER_HOST"
    assert run.metadata["pipes_docker/transport"] == "streamed"
    out, err = capsys.readouterr()
    assert "stdout: last\n" in out and "progress: done\n" in err
    assert engine.client.containers.list(all=True, filters={"label": MANAGED_LABEL}) == []


@pytest.mark.parametrize("fixture", ["local_engine", "remote_engine", "ssh_engine"])
def test_a_job_silent_for_longer_than_the_request_timeout_keeps_its_output(
    request: pytest.FixtureRequest, fixture: str, pipes_tmp: Path, run_asset: RunAsset
) -> None:
    engine: RemoteEngine = request.getfixturevalue(fixture)
    # Every request gets 2 s at most; the job is silent for 5. Over ssh, docker-py puts that
    # timeout on the attach channel itself.
    with contextlib.ExitStack() as stack:
        if isinstance(engine, SshEngine):
            stack.enter_context(engine.environment())
        impatient = docker.DockerClient(base_url=engine.address, timeout=2)
    code = """
import time
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    print("before the silence", flush=True)
    time.sleep(5)
    print("after the silence", flush=True)
    pipes.report_asset_materialization(metadata={"woke": True})
"""
    client = PipesDockerClient(
        docker_client=impatient,
        channel=PipesDockerAutoChannel(temp_dir_root=str(pipes_tmp)),
        container_kwargs=engine.container_kwargs,
        log_dir=str(pipes_tmp.parent / "logs"),
    )

    run = run_asset(client, code)

    impatient.close()
    assert run.success, run.error
    assert run.metadata["woke"] is True
    (stdout_log,) = (pipes_tmp.parent / "logs").glob("*/stdout.log")
    assert stdout_log.read_text() == "before the silence\nafter the silence\n"
