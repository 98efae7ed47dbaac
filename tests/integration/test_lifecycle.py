"""Container lifecycle on a real engine: termination, orphans, concurrency, engine failures."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import docker
import pytest
from dagster import AssetExecutionContext, DagsterInstance, MaterializeResult, asset, materialize

from pipes_docker import MANAGED_LABEL, PipesDockerAutoChannel, PipesDockerClient
from tests.jobs import AssetRun

from .conftest import TEST_IMAGE

RunAsset = Callable[..., AssetRun]
MakeClient = Callable[..., PipesDockerClient]

ORCHESTRATOR = Path(__file__).with_name("orchestrator.py")
PID_LABEL = "io.pipes-docker.orchestrator-pid"
HOST_LABEL = "io.pipes-docker.orchestrator-host"


def start_orchestrator(
    work_dir: Path, mode: str, marker: str = "", env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    (work_dir / "pipes-tmp").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(env or {}), "DAGSTER_HOME": str(work_dir / "home")}
    (work_dir / "home").mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, str(ORCHESTRATOR), mode, str(work_dir), marker],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def containers_of(client: docker.DockerClient, pid: int) -> list[Any]:
    # ignore_removed: a run may remove its container between docker-py's list and inspect.
    filters = {"label": f"{PID_LABEL}={pid}"}
    return list(client.containers.list(all=True, filters=filters, ignore_removed=True))


def wait_for_started_container(
    client: docker.DockerClient, process: subprocess.Popen[str], work_dir: Path
) -> None:
    """Wait until the orchestrator's container runs and has printed its first line."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        logs = list((work_dir / "logs").glob("*/stdout.log"))
        if (
            containers_of(client, process.pid)
            and logs
            and "container started" in logs[0].read_text()
        ):
            return
        time.sleep(0.1)
    raise AssertionError("the container never started")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_orchestrator_signalled_mid_run_stops_reads_and_removes_the_container(
    docker_client: docker.DockerClient, tmp_path: Path, signum: signal.Signals
) -> None:
    process = start_orchestrator(tmp_path, "sleep")
    try:
        wait_for_started_container(docker_client, process, tmp_path)
        signalled = time.monotonic()
        process.send_signal(signum)
        process.wait(timeout=60)
        elapsed = time.monotonic() - signalled
    finally:
        process.kill()
        process.communicate()

    assert containers_of(docker_client, process.pid) == []
    assert list((tmp_path / "pipes-tmp").iterdir()) == []
    assert elapsed < 15  # docker-init passes SIGTERM on: no wait for the SIGKILL deadline
    assert process.returncode == 1  # Dagster turned the signal into a failed run
    # What the container wrote before the signal was read: its output and its messages.
    (stdout_log,) = (tmp_path / "logs").glob("*/stdout.log")
    assert "container started" in stdout_log.read_text()
    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        (run,) = instance.get_runs()
        messages = [entry.user_message for entry in instance.all_logs(run.run_id)]
    assert "message from the container before the signal" in messages


def test_sigterm_without_a_handler_cleans_up_then_terminates_the_process(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    # No SIGTERM handler here: without pipes-docker's own, the process would die on the spot
    # and leave the container running.
    process = start_orchestrator(tmp_path, "bare-sleep")
    try:
        wait_for_started_container(docker_client, process, tmp_path)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        process.kill()
        process.communicate()

    assert containers_of(docker_client, process.pid) == []
    assert list((tmp_path / "pipes-tmp").iterdir()) == []
    assert process.returncode == -signal.SIGTERM  # the signal propagated after cleanup


def test_sigkilled_orchestrator_leaves_an_orphan_that_remove_orphans_removes(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    process = start_orchestrator(tmp_path, "sleep")
    try:
        wait_for_started_container(docker_client, process, tmp_path)
        process.kill()  # no chance to clean up
        process.wait(timeout=30)
    finally:
        process.communicate()
    (orphan,) = containers_of(docker_client, process.pid)

    # A container of a live run (this process) must survive the sweep.
    live = docker_client.containers.create(
        TEST_IMAGE,
        command=["sleep", "60"],
        network_mode="none",
        labels={
            MANAGED_LABEL: "true",
            HOST_LABEL: socket.gethostname(),
            PID_LABEL: str(os.getpid()),
        },
    )
    try:
        # (Other containers of ours may share the engine: a benchmark, another test session.)
        removed = PipesDockerClient(docker_client=docker_client).remove_orphans()
        assert orphan.id in removed
        assert live.id not in removed
        assert containers_of(docker_client, process.pid) == []
        live.reload()  # still there

        removed = PipesDockerClient(docker_client=docker_client).remove_orphans(
            older_than=timedelta(0)
        )
        assert live.id in removed
    finally:
        for container in (live, orphan):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


def test_sigterm_ignoring_container_is_killed_after_the_grace_period(
    make_client: MakeClient, run_asset: RunAsset
) -> None:
    code = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(120)
"""
    started = time.monotonic()
    run = run_asset(make_client(termination_timeout_seconds=2), code, timeout_seconds=1)
    elapsed = time.monotonic() - started

    assert not run.success
    assert "timed out after 1 seconds" in run.error
    assert 2 <= elapsed < 20


def test_eight_concurrent_runs_on_one_client_keep_their_own_results(
    make_client: MakeClient,
) -> None:
    client = make_client()
    code = """
import os, sys
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    print(f"stdout of {os.environ['MARKER']}")
    pipes.report_custom_message(os.environ["MARKER"])
    pipes.report_asset_materialization(metadata={"marker": os.environ["MARKER"],
        "extra": pipes.get_extra("marker")})
"""

    def one_run(index: int) -> tuple[str, dict[str, Any]]:
        marker = f"run-{index}"

        @asset(name=f"job_{index}")
        def job_asset(context: AssetExecutionContext) -> MaterializeResult:
            invocation = client.run(
                context=context,
                image=TEST_IMAGE,
                command=["python", "-c", code],
                env={"MARKER": marker},
                extras={"marker": marker},
            )
            assert list(invocation.get_custom_messages()) == [marker]
            return invocation.get_materialize_result()

        with DagsterInstance.ephemeral() as instance:
            result = materialize([job_asset], instance=instance)
        (materialization,) = result.asset_materializations_for_node(f"job_{index}")
        return marker, {k: v.value for k, v in materialization.metadata.items()}

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one_run, range(8)))

    container_ids = set()
    for marker, metadata in results:
        assert metadata["marker"] == marker
        assert metadata["extra"] == marker
        container_ids.add(metadata["pipes_docker/container_id"])
    assert len(container_ids) == 8


def test_separate_orchestrator_processes_run_at_once(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    processes = [
        start_orchestrator(tmp_path / f"orchestrator-{i}", "quick", f"process-{i}")
        for i in range(4)
    ]
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))

    assert [o["marker"] for o in outputs] == [f"process-{i}" for i in range(4)]


def test_container_output_lands_in_dagsters_compute_logs(tmp_path: Path) -> None:
    process = start_orchestrator(tmp_path, "quick", "compute-logs")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]

    (out_log,) = (tmp_path / "home" / "storage").rglob("compute_logs/*.out")
    (err_log,) = (tmp_path / "home" / "storage").rglob("compute_logs/*.err")
    assert "stdout line of compute-logs\n" in out_log.read_text()
    assert "stderr line of compute-logs\n" in err_log.read_text()
    assert "stderr line of" not in out_log.read_text()
    assert "stdout line of" not in err_log.read_text()


def closed_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_engine_fails_clearly_in_bounded_time(
    monkeypatch: pytest.MonkeyPatch, run_asset: RunAsset
) -> None:
    port = closed_loopback_port()
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{port}")
    client = PipesDockerClient(container_kwargs={"network_mode": "none"})

    started = time.monotonic()
    run = run_asset(client, "print('never runs')")

    assert not run.success
    assert f"Cannot reach the Docker engine at tcp://127.0.0.1:{port}" in run.error
    assert time.monotonic() - started < 40


class EngineProxy:
    """A loopback TCP front for the engine's socket that resets its first ``resets``
    connections and holds back the answer to its first ``slow_creates`` container creates (not
    their retries) for
    ``hold_seconds``: longer than a client's timeout, the engine's answer is then lost to it."""

    def __init__(self, *, resets: int = 0, slow_creates: int = 0, hold_seconds: float = 0) -> None:
        self.resets_left = resets
        self.resets_done = 0
        self.slow_creates_left = slow_creates
        self.creates: list[str] = []
        self.hold_seconds = hold_seconds
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            if self.resets_left > 0:
                self.resets_left -= 1
                self.resets_done += 1
                conn.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                conn.close()  # RST: "connection reset by peer"
                continue
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect("/var/run/docker.sock")
            held = threading.Event()  # the answer now coming back on this connection is held
            for pipe, ends in (
                (self._requests, (conn, upstream)),
                (self._answers, (upstream, conn)),
            ):
                threading.Thread(target=pipe, args=(*ends, held), daemon=True).start()

    def _requests(
        self, source: socket.socket, target: socket.socket, held: threading.Event
    ) -> None:
        def note(data: bytes) -> None:
            if data.startswith(b"POST ") and b"/containers/create" in data.split(b"\r\n", 1)[0]:
                line = data.split(b"\r\n", 1)[0].decode()
                with self._lock:
                    retried = line in self.creates
                    self.creates.append(line)
                    if self.slow_creates_left > 0 and not retried:
                        self.slow_creates_left -= 1
                        held.set()

        self._pipe(source, target, before=note)

    def _answers(self, source: socket.socket, target: socket.socket, held: threading.Event) -> None:
        def hold(data: bytes) -> None:
            if held.is_set():
                time.sleep(self.hold_seconds)
                held.clear()

        self._pipe(source, target, before=hold)

    @staticmethod
    def _pipe(
        source: socket.socket, target: socket.socket, before: Callable[[bytes], None]
    ) -> None:
        try:
            while data := source.recv(1 << 16):
                before(data)
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._server.close()


@pytest.fixture
def flaky_proxy() -> Iterator[EngineProxy]:
    proxy = EngineProxy(resets=2)
    yield proxy
    proxy.close()


def test_transient_connection_resets_are_retried(
    flaky_proxy: EngineProxy, make_client: MakeClient, run_asset: RunAsset
) -> None:
    engine_client = docker.DockerClient(
        base_url=f"tcp://127.0.0.1:{flaky_proxy.port}", version="1.41"
    )
    try:
        run = run_asset(make_client(docker_client=engine_client), "print('ran through the proxy')")
    finally:
        engine_client.close()

    assert run.success, run.error
    assert flaky_proxy.resets_done == 2


def test_a_create_whose_answer_is_lost_is_retried_and_adopts_what_the_engine_made(
    docker_client: docker.DockerClient, pipes_tmp: Path, run_asset: RunAsset
) -> None:
    # The engine makes the probe's container and the job's, but their answers come back after
    # the client's timeout: each retry's create conflicts with the name the first one took.
    proxy = EngineProxy(slow_creates=2, hold_seconds=3)
    impatient = docker.DockerClient(
        base_url=f"tcp://127.0.0.1:{proxy.port}", version="1.41", timeout=1
    )
    client = PipesDockerClient(
        docker_client=impatient,
        channel=PipesDockerAutoChannel(temp_dir_root=str(pipes_tmp)),
        container_kwargs={"network_mode": "none"},
        log_dir=str(pipes_tmp.parent / "logs"),
    )
    try:
        run = run_asset(client, "print('made once')")
    finally:
        impatient.close()
        proxy.close()

    assert run.success, run.error
    (stdout_log,) = (pipes_tmp.parent / "logs").glob("*/stdout.log")
    assert stdout_log.read_text() == "made once\n"
    # The probe's create and the job's, each sent again (more than once if the engine is slow).
    probe_create, job_create = dict.fromkeys(proxy.creates)
    assert "name=pipes-probe-" in probe_create and "name=pipes-" in job_create
    assert proxy.creates.count(probe_create) >= 2 and proxy.creates.count(job_create) >= 2
    probe = probe_create.split("name=", 1)[1].split()[0]
    assert docker_client.containers.list(all=True, filters={"name": probe}) == []
