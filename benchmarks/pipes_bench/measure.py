"""How one measurement is taken: a fresh worker process per (scenario, runner).

The parent (``measure()``) starts ``python -m benchmarks.pipes_bench --worker SPEC``; the worker
warms up with unmeasured no-op runs, takes the measured run(s), checks them and writes a JSON
record. A worker of its own per measurement makes the peak RSS (``VmHWM``) that one
measurement's alone. The parent then finds what the runner left behind on its engine
(``engines.Engines.left_behind``), and counts the temp dirs left in the worker's ``TMPDIR``.

A fresh-process scenario's worker (``fresh_worker``) takes one run and no warm-up: what a step
pays in a process of its own, as under Dagster's multiprocess executor.
"""

from __future__ import annotations

import compileall
import contextlib
import importlib.util
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .engines import LABEL_RUNNER, LABEL_SESSION, Engines
from .runners import RUNNERS, Job, cpu_seconds, make_runner, proc_status_kib
from .scenarios import IMAGE, SCRIPT_NOOP, Scenario, analyse, count_stdout_lines, scenarios

HERE = Path(__file__).resolve().parent  # benchmarks/pipes_bench
ROOT = HERE.parent.parent


# --------------------------------------------------------------------------------------------
# In the worker
# --------------------------------------------------------------------------------------------


@contextmanager
def fds_to_devnull(stdout_path: str = os.devnull) -> Iterator[None]:
    """Point fd 1 and 2 at /dev/null: the orchestrator still writes, nothing gets printed.

    ``stdout_path`` sends fd 1 to a file instead (where the stdout check counts the lines).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    out = os.open(stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, 1)
    os.dup2(null, 2)
    os.close(null)
    os.close(out)
    try:
        yield
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def labels_for(spec: dict[str, Any], warmup: bool) -> dict[str, str]:
    """The labels of a measurement's containers. Warm-ups' are cleaned up, never counted."""
    runner = spec["runner"] + ("-warmup" if warmup else "")
    return {LABEL_SESSION: spec["session"], LABEL_RUNNER: runner}


def engine_cpu_seconds() -> float | None:
    """CPU seconds dockerd and containerd have used so far (None when they cannot be read)."""
    total, found = 0.0, False
    tick = os.sysconf("SC_CLK_TCK")
    for name in ("dockerd", "containerd"):
        pids = subprocess.run(["pidof", name], capture_output=True, text=True).stdout.split()
        pidfile = Path("/var/run/docker.pid")
        if name == "dockerd" and pidfile.exists():
            pids = [pidfile.read_text().strip()]  # the host's engine, not a DinD one
        for pid in pids[:1]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            found = True
    return total if found else None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def one_at_a_time(runner: Any, scenario: Scenario, job: Job, spec: dict[str, Any]) -> dict:
    """``scenario.repeats`` runs, one after the other; medians in the record, all in lists."""
    runs = []
    for _ in range(scenario.repeats):
        with fds_to_devnull(spec.get("stdout_path") or os.devnull):
            out = runner.run(job, labels_for(spec, warmup=False))
        runs.append(analyse(job.kind, job.params, out, messages=job.messages))
    record: dict[str, Any] = dict(runs[-1])
    for key, many in (("wall", "walls"), ("run", "runs"), ("cpu", "cpus")):
        values = [r[key] for r in runs if r.get(key) is not None]
        record[many] = values
        record[key] = _median(values)
    record["peak_rss_kib"] = max((r.get("peak_rss_kib") or 0 for r in runs), default=0)
    failed = [r for r in runs if not r.get("ok")]
    record["ok"] = not failed
    if failed:
        record["error"] = failed[0].get("error", "failed")
    record["transports"] = sorted({str(r["transport"]) for r in runs if r.get("transport")})
    return record


def all_at_once(runner: Any, scenario: Scenario, job: Job, spec: dict[str, Any]) -> dict:
    """``scenario.concurrent`` runs started together from this process's threads."""
    n = scenario.concurrent
    labels = labels_for(spec, warmup=False)
    with fds_to_devnull(), ThreadPoolExecutor(max_workers=n) as pool:
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        outs = list(pool.map(lambda _: runner.run(job, labels), range(n)))
        wall = time.perf_counter() - started
        cpu = cpu_seconds() - cpu_before
    runs = [analyse(job.kind, job.params, out, messages=job.messages) for out in outs]
    record: dict[str, Any] = {
        "wall": wall,
        "cpu": cpu,
        "runs_per_second": n / wall,
        "runs": [r.get("run") for r in runs],
        "run": _median([r["run"] for r in runs if r.get("run") is not None]),
        "peak_rss_kib": max(out.get("peak_rss_kib") or 0 for out in outs),
        "runs_ok": sum(1 for r in runs if r.get("ok")),
        "concurrent": n,
        "warnings": sum(r.get("warnings", 0) for r in runs),
        "transports": sorted({str(r["transport"]) for r in runs if r.get("transport")}),
    }
    if any("delivered" in r for r in runs):
        record["delivered"] = sum(r.get("delivered", 0) for r in runs)
        record["expected"] = job.messages * n
        record["duplicates"] = sum(r.get("duplicates", 0) for r in runs)
        record["runs_complete"] = sum(
            1 for r in runs if r.get("delivered") == job.messages and not r.get("duplicates")
        )
    failed = [r for r in runs if not r.get("ok")]
    record["ok"] = not failed
    if failed:
        record["error"] = f"{len(failed)} of {n} runs failed; first: {failed[0].get('error')}"
    return record


def job_of(spec: dict[str, Any]) -> tuple[Scenario, Job]:
    params = spec["params"]
    scenario = scenarios(params, spec["suite"])[spec["scenario"]]
    job = Job(
        scenario.job,
        scenario.script(params),
        params,
        stdout_bytes=scenario.stdout_bytes,
        messages=scenario.messages(params),
    )
    return scenario, job


@contextmanager
def engine_requests() -> Iterator[list[tuple[float, float, str]]]:
    """The engine requests the main thread makes meanwhile: (sent, answered, "METHOD /path").

    Every client here talks to the engine through docker-py, which sends each request with
    ``requests.Session.send``; a streamed answer counts as answered when its headers arrive.
    """
    import threading

    import requests

    seen: list[tuple[float, float, str]] = []
    original = requests.Session.send

    def send(self: Any, request: Any, **kwargs: Any) -> Any:
        sent = time.perf_counter()
        try:
            return original(self, request, **kwargs)
        finally:
            if threading.current_thread() is threading.main_thread():
                path = str(request.path_url).split("?")[0]
                seen.append((sent, time.perf_counter(), f"{request.method} {path}"))

    requests.Session.send = send  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        requests.Session.send = original  # type: ignore[method-assign]


# How phases_of cuts a fresh run's wall, in order.
PHASES = ("setup", "to_start", "start", "running", "after_exit")


def phases_of(
    requests_seen: list[tuple[float, float, str]], clock: float, made: float, end: float
) -> dict[str, float] | None:
    """The run's wall cut where the runner's client was made, where the engine was asked to
    start the container and where the orchestrator saw it exit (its last ``wait``): ``setup``
    (importing the client's package and making the client), ``to_start`` (the client's and
    Dagster's work up to the start request), ``start`` (the engine starting it), ``running``
    (the job, until its exit is seen) and ``after_exit`` (the client's and Dagster's work to
    the end)."""
    starts = [(sent, done) for sent, done, what in requests_seen if _is_post(what, "/start")]
    waits = [done for _, done, what in requests_seen if _is_post(what, "/wait")]
    if len(starts) != 1 or not waits:
        return None
    (sent, started), exited = starts[0], waits[-1]
    return {
        "setup": made - clock,
        "to_start": sent - made,
        "start": started - sent,
        "running": exited - started,
        "after_exit": end - exited,
    }


def _is_post(what: str, suffix: str) -> bool:
    return what.startswith("POST ") and what.endswith(suffix)


def fresh_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One run in this fresh process, no warm-up: what a step pays under Dagster's
    multiprocess executor, whose step process loads the code location (and so imports the
    client's package) before it runs the step.

    ``dagster`` and ``docker`` (docker-py), which every row needs, are imported first
    (``imports``) and the Dagster instance is made. The clock starts after that and stops when
    ``materialize()`` returns (docker-py: when the container is removed): it covers importing
    the runner's own package (``pipes_docker``, ``dagster_docker``: each row imports only its
    own) and making its client, then the whole run. The parent adds the process's own wall
    time. The engine requests are timed too, to cut the wall into phases (``phases_of``).
    """
    started = time.perf_counter()
    import dagster  # every row needs them: imported before the clock
    import docker  # noqa: F401

    imports = time.perf_counter() - started
    _, job = job_of(spec)
    with (
        dagster.DagsterInstance.ephemeral() as instance,
        fds_to_devnull(),
        engine_requests() as seen,
    ):
        cpu_before = cpu_seconds()
        clock = time.perf_counter()
        loaded = len(sys.modules)
        runner = make_runner(spec["runner"], job, spec)  # imports the runner's own package
        made = time.perf_counter()
        setup_modules = len(sys.modules) - loaded
        out = runner.run(job, labels_for(spec, warmup=False), instance=instance)
        end = time.perf_counter()
        out["clock"] = end - clock
        out["cpu"] = cpu_seconds() - cpu_before
        record = analyse(job.kind, job.params, out, messages=job.messages)
        record["phases"] = phases_of(seen, clock, made, end)
    return {**record, "imports": imports, "setup_modules": setup_modules}


def compile_packages(names: tuple[str, ...] = ("pipes_docker",)) -> None:
    """Write the bytecode of ``names`` as ``pip install`` does, so that a fresh process reads
    it instead of compiling the sources (an editable install under
    ``PYTHONDONTWRITEBYTECODE`` would compile every module in every process, which no
    installed package does; dagster-docker's came with its install)."""
    for name in names:
        found = importlib.util.find_spec(name)
        for directory in (found.submodule_search_locations or []) if found else []:
            compileall.compile_dir(directory, quiet=1)


def worker(spec: dict[str, Any]) -> None:
    """One measurement, in this (fresh) process; the record goes to ``spec["out"]``."""
    if spec.get("fresh"):
        Path(spec["out"]).write_text(json.dumps(fresh_worker(spec)))
        return
    params = spec["params"]
    scenario, job = job_of(spec)
    runner = make_runner(spec["runner"], job, spec, concurrent=scenario.concurrent)
    # Warm up first: Dagster's lazy imports, the docker client, the page cache. The baseline
    # RSS is taken after them, so "+RSS" is what the scenario itself added.
    noop = Job("noop", SCRIPT_NOOP, params)
    warmups = []
    warmup_runs = params["warmup_runs"] if scenario.warmups is None else scenario.warmups
    for _ in range(warmup_runs):
        with fds_to_devnull():
            warmups.append(runner.run(noop, labels_for(spec, warmup=True), keep=False))
    hwm_before = proc_status_kib("VmHWM")
    engine_before = engine_cpu_seconds()
    if scenario.concurrent:
        record = all_at_once(runner, scenario, job, spec)
    else:
        record = one_at_a_time(runner, scenario, job, spec)
    engine_after = engine_cpu_seconds()
    if engine_before is not None and engine_after is not None:
        record["engine_cpu"] = engine_after - engine_before
    bad_warmups = [w for w in warmups if not w.get("ok")]
    if bad_warmups and record.get("ok"):
        record["ok"] = False
        record["error"] = "warm-up failed: " + str(bad_warmups[0].get("error"))
    record["warmup_runs"] = [w.get("run") for w in warmups]
    if runner.in_process:
        record["hwm_before_kib"] = hwm_before
    else:  # the orchestrator is the docker CLI process: the peak RSS of our children
        record["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        record["hwm_before_kib"] = None
    Path(spec["out"]).write_text(json.dumps(record))


# --------------------------------------------------------------------------------------------
# In the parent
# --------------------------------------------------------------------------------------------


def preflight() -> None:
    """The engine answers and the image is there (built with images/build.sh when missing)."""
    try:
        subprocess.run(["docker", "version"], capture_output=True, check=True, timeout=30)
    except Exception as exc:
        sys.exit(f"Docker engine not reachable: {exc}")
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode:
        print(f"{IMAGE} is missing; building it with images/build.sh", file=sys.stderr)
        subprocess.run([str(ROOT / "images" / "build.sh")], check=True)


def run_worker(
    spec: dict[str, Any], workdir: Path, timeout: float, engines: Engines
) -> dict[str, Any]:
    """Run one worker to its end (or ``timeout``); its record, with what it left behind."""
    call_dir = Path(tempfile.mkdtemp(prefix=f"{spec['scenario']}-{spec['runner']}-", dir=workdir))
    out_file = call_dir / "result.json"
    log_file = call_dir / "worker.log"
    # The worker's TMPDIR: pipes-docker's per-run temp dirs go here. Fresh-process workers of one
    # runner share theirs, as the step processes of one Dagster run share the orchestrator's
    # (what a process learns about that dir, such as the probe's answer, is then reused).
    tmp = workdir / f"tmp-{spec['runner']}" if spec.get("fresh") else call_dir / "tmp"
    tmp.mkdir(exist_ok=True)
    spec = {**spec, "out": str(out_file)}
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}
    env.pop("DAGSTER_HOME", None)
    engine = RUNNERS[spec["runner"]].engine
    if engines.urls.get(engine):  # for dagster-docker, which makes its client from the env
        env["DOCKER_HOST"] = str(engines.urls[engine])
    started = time.perf_counter()
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.pipes_bench", "--worker", json.dumps(spec)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(ROOT),
            start_new_session=True,
        )
        # A timer enforces the timeout: Popen.wait(timeout=...) polls, sleeping up to 50 ms
        # between looks, which rounded the worker's wall time (a fresh row's "whole process")
        # up to the next 50 ms.
        timer = threading.Timer(timeout, _kill_group, args=(proc,))
        timer.start()
        try:
            proc.wait()
        finally:  # also on Ctrl-C: the worker is in its own session and would live on
            timer.cancel()
            if proc.poll() is None:
                _kill_group(proc)
                proc.wait()
    elapsed = time.perf_counter() - started
    record: dict[str, Any]
    if out_file.exists():
        record = json.loads(out_file.read_text())
    else:
        tail = log_file.read_text(errors="replace").strip().splitlines()[-3:]
        reason = "timed out" if elapsed >= timeout else f"worker exited {proc.returncode}"
        record = {"ok": False, "error": f"{reason}: {' | '.join(tail)[:300]}"}
    record["worker_seconds"] = round(elapsed, 4)
    record["loadavg_after"] = round(os.getloadavg()[0], 2)
    # What the runner left behind: containers (found by our labels) and temp dirs.
    left = engines.left_behind(engine, spec["session"], spec["runner"])
    record["containers_left"], record["warmup_containers_left"] = left
    record["temp_left"] = sum(1 for _ in tmp.iterdir())
    shutil.rmtree(call_dir, ignore_errors=True)
    return record


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def killed_externally(record: dict[str, Any]) -> bool:
    """A container that died of SIGKILL without hitting a memory limit.

    Seen when something else on the same engine force-removes containers carrying
    pipes-docker's ``io.pipes-docker.managed`` label while ours runs (the project's own
    integration-test fixture sweeps every such container before and after each test). Not a
    result worth keeping.
    """
    error = str(record.get("error", ""))
    return "exited with code 137" in error and "OOM" not in error and "memory" not in error


def measure(
    spec: dict[str, Any],
    workdir: Path,
    timeout: float,
    attempts: int,
    stdout_dir: Path | None,
    engines: Engines,
) -> dict[str, Any]:
    """One (scenario, runner) measurement, tried again when a container was killed from
    outside. With ``stdout_dir``, the worker's fd 1 goes to a file there, whose lines are
    counted."""
    earlier: list[str] = []
    params = spec["params"]
    scenario = scenarios(params, spec["suite"])[spec["scenario"]]
    for _ in range(attempts):
        path = None
        if stdout_dir is not None and scenario.job == "stdout":
            path = stdout_dir / f"{spec['scenario']}-{spec['runner']}.out"
            spec = {**spec, "stdout_path": str(path)}
        record = run_worker(spec, workdir, timeout, engines)
        if path is not None:
            if path.exists():
                record["stdout_check"] = count_stdout_lines(str(path), params["line_bytes"])
                path.unlink()
            record["expected_lines"] = scenario.stdout_bytes // params["line_bytes"]
        if record.get("ok") or not killed_externally(record):
            break
        earlier.append(str(record.get("error")))
    if earlier:
        record["retried_after"] = earlier
    return record
