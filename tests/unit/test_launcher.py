"""The launcher on the container backend: output drained, containers stopped and removed, always."""

from __future__ import annotations

import io
import threading
import time

import pytest

from pipes_docker.backend import JobExit, JobSpec, RunImage
from pipes_docker.container.backend import ContainerBackend
from pipes_docker.container.engine import ContainerSpec
from pipes_docker.demux import LineSink
from pipes_docker.errors import (
    PipesDockerEngineError,
    PipesDockerOutputError,
    PipesDockerTimeoutError,
)
from pipes_docker.launcher import JobLauncher

from .fakes import FakeContainer, FakeEngine, never_exits


def ContainerLauncher(engine: FakeEngine, **settings: float) -> JobLauncher:
    return JobLauncher(ContainerBackend(engine), **settings)


def spec(**options: object) -> JobSpec:
    return JobSpec(
        image=RunImage("job:1"), name="pipes-test", command=None, env={}, labels={}, options=options
    )


def sinks() -> tuple[LineSink, LineSink, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return LineSink([out]), LineSink([err]), out, err


def test_output_written_just_before_exit_is_all_drained() -> None:
    lines = [f"line {i:06d} " + "x" * 100 for i in range(20_000)]

    def chatty(spec: ContainerSpec, box: FakeContainer) -> int:
        for line in lines:
            box.stdout(line + "\n")
        box.stderr("last words")  # no newline, then exit at once
        return 0

    stdout, stderr, out, err = sinks()
    outcome = ContainerLauncher(FakeEngine(chatty)).run(spec(), stdout=stdout, stderr=stderr)

    assert outcome.exit == JobExit(0)
    assert out.getvalue() == "".join(line + "\n" for line in lines)
    assert err.getvalue() == "last words\n"


def test_nonzero_exit_is_an_outcome_not_an_error() -> None:
    engine = FakeEngine(lambda spec, box: 5)
    stdout, stderr, _, _ = sinks()

    outcome = ContainerLauncher(engine).run(spec(), stdout=stdout, stderr=stderr)

    assert outcome.exit.exit_code == 5
    assert outcome.target.id == engine.only.id
    assert engine.live_containers() == []


def test_tty_output_arrives_unframed_on_stdout() -> None:
    def tty_job(spec: ContainerSpec, box: FakeContainer) -> int:
        box.stdout("progress 50%\r\n")
        box.stderr("warning on the same tty\n")
        return 0

    stdout, stderr, out, err = sinks()
    ContainerLauncher(FakeEngine(tty_job)).run(spec(tty=True), stdout=stdout, stderr=stderr)

    assert out.getvalue() == "progress 50%\r\nwarning on the same tty\n"
    assert err.getvalue() == ""


class InterruptedWait(FakeEngine):
    """An engine whose wait is cut short by Ctrl-C, as a signal handler would."""

    def wait(self, container_id: str, timeout: float) -> JobExit | None:
        super().wait(container_id, 0.01)
        raise KeyboardInterrupt


def test_interrupted_run_stops_and_removes_the_container() -> None:
    engine = InterruptedWait(never_exits)
    interruptions: list[BaseException] = []
    stdout, stderr, _, _ = sinks()

    with pytest.raises(KeyboardInterrupt):
        ContainerLauncher(engine).run(
            spec(), stdout=stdout, stderr=stderr, on_interrupt=interruptions.append
        )

    assert [type(exc) for exc in interruptions] == [KeyboardInterrupt]
    ops = engine.ops()
    assert ops.index("stop") < ops.index("remove")
    assert engine.live_containers() == []


class FailingStop(InterruptedWait):
    def stop(self, container_id: str, grace_seconds: float) -> None:
        self._record("stop", container_id)
        raise PipesDockerEngineError("engine went away while stopping")


def test_container_is_removed_even_when_stopping_it_fails() -> None:
    engine = FailingStop(never_exits)
    stdout, stderr, _, _ = sinks()
    launcher = ContainerLauncher(engine, drain_timeout_seconds=0.2)

    with pytest.raises(KeyboardInterrupt):
        launcher.run(spec(), stdout=stdout, stderr=stderr)

    assert engine.ops()[-1] == "remove"
    assert engine.live_containers() == []


def test_cleanup_after_a_failed_stop_does_not_wait_out_the_drain_timeout() -> None:
    engine = FailingStop(never_exits)
    stdout, stderr, _, _ = sinks()
    launcher = ContainerLauncher(engine, drain_timeout_seconds=3)

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        launcher.run(spec(), stdout=stdout, stderr=stderr)

    assert time.monotonic() - started < 1.5
    assert engine.live_containers() == []


def test_container_ignoring_sigterm_is_killed_after_the_grace_period() -> None:
    def stubborn(spec: ContainerSpec, box: FakeContainer) -> int:
        box.stop_requested.wait()
        box.exited.wait(60)  # ignores SIGTERM: runs until killed
        return 0

    engine = FakeEngine(stubborn)
    stdout, stderr, _, _ = sinks()
    launcher = ContainerLauncher(engine, termination_timeout_seconds=0.2, poll_interval=0.05)

    with pytest.raises(PipesDockerTimeoutError) as caught:
        launcher.run(spec(), stdout=stdout, stderr=stderr, timeout_seconds=0.1)

    assert caught.value.timeout_seconds == 0.1
    assert engine.only.exit == JobExit(137)
    assert engine.live_containers() == []


class UnstoppableEngine(FakeEngine):
    def stop(self, container_id: str, grace_seconds: float) -> None:
        self._record("stop", container_id)
        raise PipesDockerEngineError("engine went away while stopping")


def test_timeout_is_reported_even_when_stopping_the_container_fails() -> None:
    engine = UnstoppableEngine(never_exits)
    stdout, stderr, _, _ = sinks()
    launcher = ContainerLauncher(engine, poll_interval=0.05, drain_timeout_seconds=0.2)

    with pytest.raises(PipesDockerTimeoutError):
        launcher.run(spec(), stdout=stdout, stderr=stderr, timeout_seconds=0.1)

    assert engine.live_containers() == []


class BrokenStream:
    """An attach stream whose transport breaks after the first chunk (paramiko's read-less
    Channel did this: ``AttributeError`` on the pump thread)."""

    def __init__(self) -> None:
        self.reads = 0

    def read(self, size: int) -> bytes:
        self.reads += 1
        if self.reads == 1:
            return bytes([1, 0, 0, 0, 0, 0, 0, 6]) + b"early\n"
        raise AttributeError("'Channel' object has no attribute 'read'")

    def close(self) -> None:
        pass


class BrokenAttach(FakeEngine):
    def attach(self, container_id: str) -> BrokenStream:  # type: ignore[override]
        super().attach(container_id)
        return BrokenStream()


def test_a_pump_that_dies_fails_the_run_with_its_cause() -> None:
    engine = BrokenAttach(lambda spec, box: 0)
    stdout, stderr, out, _ = sinks()

    with pytest.raises(PipesDockerOutputError) as raised:
        ContainerLauncher(engine).run(spec(), stdout=stdout, stderr=stderr)

    assert "AttributeError: 'Channel' object has no attribute 'read'" in str(raised.value)
    assert isinstance(raised.value.__cause__, AttributeError)
    assert out.getvalue() == "early\n"
    assert engine.live_containers() == []


class ExplodingSink(LineSink):
    def write(self, data: bytes | memoryview) -> None:
        raise RuntimeError("disk full")


def test_a_sink_that_raises_fails_the_run_and_the_container_is_still_drained() -> None:
    def chatty(spec: ContainerSpec, box: FakeContainer) -> int:
        for i in range(1000):
            box.stdout(f"line {i}\n")
        return 0

    engine = FakeEngine(chatty)

    with pytest.raises(PipesDockerOutputError, match="RuntimeError: disk full"):
        ContainerLauncher(engine).run(spec(), stdout=ExplodingSink(), stderr=LineSink())

    assert engine.live_containers() == []


def test_an_output_stream_cut_while_the_container_runs_fails_the_run_and_stops_it() -> None:
    def cut_off(spec: ContainerSpec, box: FakeContainer) -> int:
        box.stdout("before the engine restart\n")
        box.stream.end()  # the engine drops the attach connection; the job runs on
        box.stop_requested.wait(30)
        return 137

    engine = FakeEngine(cut_off)
    stdout, stderr, out, _ = sinks()

    with pytest.raises(PipesDockerOutputError, match="while the container was still running"):
        ContainerLauncher(engine, poll_interval=0.05).run(spec(), stdout=stdout, stderr=stderr)

    assert out.getvalue() == "before the engine restart\n"
    assert "stop" in engine.ops()
    assert engine.live_containers() == []


def test_a_stream_ending_with_the_container_costs_no_extra_engine_call() -> None:
    engine = FakeEngine(lambda spec, box: 0)
    stdout, stderr, _, _ = sinks()

    ContainerLauncher(engine).run(spec(), stdout=stdout, stderr=stderr)

    assert engine.ops().count("wait") == 1


class SlowSink(LineSink):
    """A sink as slow as Dagster's handling of a message flood."""

    def write(self, data: bytes | memoryview) -> None:
        time.sleep(0.02)
        super().write(data)


def test_a_busy_pump_is_not_cut_off_by_the_drain_timeout() -> None:
    lines = [f"line {i}\n" for i in range(200)]

    def flood_then_exit(spec: ContainerSpec, box: FakeContainer) -> int:
        for line in lines:
            box.stdout(line)
        return 0

    out = io.StringIO()
    launcher = ContainerLauncher(FakeEngine(flood_then_exit), drain_timeout_seconds=0.5)

    launcher.run(spec(), stdout=SlowSink([out]), stderr=LineSink())

    # Draining took seconds, far past the 0.5 s timeout, yet nothing was cut off: the stream
    # was never idle for that long.
    assert out.getvalue() == "".join(lines)


class SlowStart(FakeEngine):
    """An engine whose start request takes a while, as a real engine's does (~150 ms)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.start_began = threading.Event()

    def start(self, container_id: str, image: str) -> None:
        self.start_began.set()
        time.sleep(0.2)
        super().start(container_id, image)


def test_the_creation_hook_runs_while_the_engine_starts_the_job_and_ends_before_it_runs() -> None:
    engine = SlowStart(lambda spec, box: 0)
    seen: list[str] = []

    def on_created(job_id: str) -> None:
        # It may not hold up the start request: it waits for it here, and would time out.
        seen.append("start requested" if engine.start_began.wait(5) else "start not requested")
        time.sleep(0.05)
        seen.append(f"created {job_id}")

    stdout, stderr, _, _ = sinks()
    outcome = ContainerLauncher(engine).run(
        spec(),
        stdout=stdout,
        stderr=stderr,
        on_created=on_created,
        on_started=lambda job_id: seen.append(f"started {job_id}"),
    )

    job_id = outcome.target.id
    assert seen == ["start requested", f"created {job_id}", f"started {job_id}"]


def test_a_creation_hook_that_fails_fails_the_run_and_the_job_is_removed() -> None:
    engine = FakeEngine(never_exits)

    def on_created(job_id: str) -> None:
        raise RuntimeError("event log unavailable")

    stdout, stderr, _, _ = sinks()
    with pytest.raises(RuntimeError, match="event log unavailable"):
        ContainerLauncher(engine).run(spec(), stdout=stdout, stderr=stderr, on_created=on_created)

    assert engine.live_containers() == []
    assert not [t for t in threading.enumerate() if t.name == "pipes-docker-created"]


def test_a_start_that_fails_still_records_the_created_job_and_leaves_no_thread() -> None:
    class FailingStart(FakeEngine):
        def start(self, container_id: str, image: str) -> None:
            raise PipesDockerEngineError("no such runtime")

    engine = FailingStart(lambda spec, box: 0)
    created: list[str] = []
    stdout, stderr, _, _ = sinks()
    with pytest.raises(PipesDockerEngineError, match="no such runtime"):
        ContainerLauncher(engine).run(
            spec(), stdout=stdout, stderr=stderr, on_created=created.append
        )

    assert created == [engine.only.id]
    assert engine.live_containers() == []
    assert not [t for t in threading.enumerate() if t.name == "pipes-docker-created"]
