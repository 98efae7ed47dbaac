#!/usr/bin/env python
"""Measure PipesDockerSwarmClient beside the single-host PipesDockerClient and a raw Swarm floor.

Everything runs on a two-node Swarm built for the purpose by the integration tests' fixture
builder (``two_node_swarm`` in tests/integration/swarm.py): two Docker-in-Docker Engine 26
nodes joined by a veth pair, the test image loaded on both, all of it taken down at the end.
Every job runs on the worker node, with host networking inside that node.

Rows (runners), all on the image pipes-docker-testjob:latest:

* ``pipes-docker Swarm``: ``PipesDockerSwarmClient`` on the manager, the job constrained to the
  worker node, called from a Dagster asset via ``dagster.materialize``;
* ``pipes-docker single host, streamed``: ``PipesDockerClient`` with
  ``PipesDockerStreamedChannel()`` on the worker node's engine itself (same node, same image,
  no Swarm), called the same way;
* ``raw docker service create``: docker-py's low-level API on the manager, no Dagster: create a
  ``replicated-job`` service (restart none, the same constraint and network), poll its task
  until it ends, read the service's logs once (no follow), remove the service. The floor of a
  Swarm job.

Columns (scenarios), the jobs of bench.py:

* trivial run: a job that only opens and closes its Pipes session; median of 5 runs after one
  warm-up (``--quick``: 3);
* 100 MiB to stdout in 128-byte lines (``--quick``: 20 MiB): time, and whether every line
  arrived (the pipes clients keep the output in ``log_dir``, whose ``stdout.log`` is counted;
  the raw row counts the lines in the logs it read);
* 20,000 ``pipes.log.info`` calls (``--quick``: 5,000): time, and how many arrived in the
  run's Dagster event log.

Times are those of the client's ``run()`` call inside the asset (for the raw row: from creating
the service to its removal); ``materialize()``'s wall time and the process's peak RSS during
each measurement (``VmHWM``, reset before it) are in the JSON.

Usage (from the repository root, with the project's venv and the local Docker engine, which
must have the images pipes-docker-swarm-node:latest and pipes-docker-testjob:latest, see
images/build.sh):

    .venv/bin/python benchmarks/swarm.py            # full run
    .venv/bin/python benchmarks/swarm.py --quick    # 20 MiB, 5k messages, 3 runs

The table is printed as markdown and written to ``--markdown`` (default benchmarks/swarm.md);
every figure to ``--json`` (default benchmarks/swarm.json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench
from pipes_bench.scenarios import count_stdout_lines

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IMAGE = bench.IMAGE
MIB = 1024 * 1024
SESSION_LABEL = "io.pipes-docker-bench.swarm-session"
# Task states after which a task will not run (again).
ENDED_STATES = frozenset({"complete", "failed", "rejected", "shutdown", "remove", "orphaned"})
RAW_POLL_SECONDS = 0.05
RAW_TIMEOUT_SECONDS = 600.0
GONE_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Runner:
    key: str
    label: str
    kind: str  # "swarm", "single" or "raw"


RUNNERS = {
    "swarm": Runner("swarm", "pipes-docker Swarm", "swarm"),
    "single": Runner("single", "pipes-docker single host, streamed", "single"),
    "raw": Runner("raw", "raw docker service create", "raw"),
}
SCENARIOS = ("trivial", "stdout", "logs")


def default_params(quick: bool) -> dict[str, Any]:
    return {
        "repeats": 3 if quick else 5,
        "warmups": 1,
        "stdout_bytes": (20 if quick else 100) * MIB,
        "line_bytes": 128,
        "messages": 5_000 if quick else 20_000,
    }


def expected_lines(params: dict[str, Any]) -> int:
    """The number of lines ``script_stdout`` writes (whole 64 KiB blocks of whole lines)."""
    per_block = (64 * 1024) // params["line_bytes"]
    return (params["stdout_bytes"] // (per_block * params["line_bytes"])) * per_block


def scenario_titles(params: dict[str, Any]) -> dict[str, str]:
    return {
        "trivial": f"trivial run (median of {params['repeats']})",
        "stdout": f"{params['stdout_bytes'] // MIB} MiB stdout, {params['line_bytes']}-byte lines",
        "logs": f"{params['messages']} pipes.log.info",
    }


# --------------------------------------------------------------------------------------------
# Memory: the peak RSS of this process during one measurement
# --------------------------------------------------------------------------------------------


def reset_peak_rss() -> None:
    """Reset ``VmHWM`` to the current RSS (Linux: ``5`` to ``/proc/self/clear_refs``)."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mib() -> float | None:
    kib = bench._proc_status_kib("VmHWM")
    return round(kib / 1024, 1) if kib else None


# --------------------------------------------------------------------------------------------
# The runners: ``once(scenario, script)`` does one run and returns its figures
# --------------------------------------------------------------------------------------------

Once = Callable[[str, str], dict[str, Any]]


def make_dagster_runner(runner: Runner, cluster: Any, params: dict[str, Any], log_dir: str) -> Any:
    """``once(scenario, script)`` for a pipes-docker row, and the docker client to close."""
    import docker
    from dagster import DagsterInstance, asset, materialize

    from pipes_docker import (
        PipesDockerClient,
        PipesDockerStreamedChannel,
        PipesDockerSwarmClient,
    )

    if runner.kind == "swarm":
        docker_client = docker.DockerClient(base_url=cluster.manager_url, timeout=120)
        client: Any = PipesDockerSwarmClient(
            docker_client=docker_client,
            service_kwargs={
                "constraints": [f"node.hostname=={cluster.worker_hostname}"],
                "networks": ["host"],
            },
            forward_stdio=False,
            log_dir=log_dir,
        )
    else:
        docker_client = docker.DockerClient(base_url=cluster.worker_url, timeout=120)
        client = PipesDockerClient(
            docker_client=docker_client,
            channel=PipesDockerStreamedChannel(),
            container_kwargs={"network_mode": "host"},
            forward_stdio=False,
            log_dir=log_dir,
        )
    current: dict[str, Any] = {}
    phases = time_launcher_phases(client) if runner.kind == "swarm" else {}

    @asset(name=bench.ASSET_NAME)
    def bench_asset(context):  # no annotation: `from __future__ import annotations` is on
        started = time.perf_counter()
        try:
            invocation = client.run(
                context=context, image=IMAGE, command=["python", "-c", current["script"]]
            )
        finally:
            current["run"] = time.perf_counter() - started
        return invocation.get_materialize_result()

    def once(scenario: str, script: str) -> dict[str, Any]:
        current.clear()
        phases.clear()
        current["script"] = script
        shutil.rmtree(log_dir, ignore_errors=True)
        os.makedirs(log_dir)
        with DagsterInstance.ephemeral() as instance:
            started, cpu_started = time.perf_counter(), time.process_time()
            # Dagster's console logger would print every message: fd 1 and 2 to /dev/null.
            with bench.fds_to_devnull():
                result = materialize([bench_asset], instance=instance, raise_on_error=False)
            out: dict[str, Any] = {
                "wall": time.perf_counter() - started,
                "cpu": time.process_time() - cpu_started,
                "run": current.get("run"),
                "ok": result.success,
            }
            if phases:
                out["phases"] = dict(phases)
            if not result.success:
                out["error"] = bench._failure_message(result)
            out["_result"] = result
            out["_logs"] = instance.all_logs(result.run_id)
            out = bench.analyse(scenario, {"params": params}, out)
        if scenario == "stdout":
            logs = sorted(Path(log_dir).glob("*/stdout.log"))
            if logs:
                found = count_stdout_lines(str(logs[0]), params["line_bytes"])
                out.update(
                    lines=found["lines"],
                    blank_lines=found["blank_lines"],
                    other_lines=found["other_lines"],
                    stdout_bytes=found["bytes"],
                )
            else:
                out["lines"] = 0
                out.setdefault("error", "no stdout.log in log_dir")
        shutil.rmtree(log_dir, ignore_errors=True)
        return out

    return once, docker_client


class LineCounter:
    """Counts the job's lines (``x`` * (line_bytes - 1)) in a stream cut at any point."""

    def __init__(self, line_bytes: int) -> None:
        self._expected = b"x" * (line_bytes - 1)
        self._rest = b""
        self.lines = 0
        self.bytes = 0

    def feed(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        pieces = (self._rest + chunk).split(b"\n")
        self._rest = pieces.pop()
        self.lines += pieces.count(self._expected)


def make_raw_runner(cluster: Any, params: dict[str, Any], session: str) -> Any:
    """``once(scenario, script)`` for the raw row: docker-py's low-level API on the manager."""
    import docker
    import docker.errors
    import docker.types

    docker_client = docker.DockerClient(base_url=cluster.manager_url, timeout=120)
    api = docker_client.api
    env = [f"{key}={value}" for key, value in bench.raw_pipes_env().items()]

    def once(scenario: str, script: str) -> dict[str, Any]:
        template = docker.types.TaskTemplate(
            container_spec=docker.types.ContainerSpec(
                IMAGE,
                args=["python", "-c", script],  # keeps the image's entrypoint, as the client
                env=env,
                labels={SESSION_LABEL: session},
                init=True,
            ),
            restart_policy=docker.types.RestartPolicy(condition="none"),
            placement=docker.types.Placement(
                constraints=[f"node.hostname=={cluster.worker_hostname}"]
            ),
            networks=["host"],
        )
        counter = LineCounter(params["line_bytes"])
        out: dict[str, Any] = {"ok": False}
        started, cpu_started = time.perf_counter(), time.process_time()
        service_id = api.create_service(
            template,
            name=f"bench-raw-{uuid.uuid4().hex[:12]}",
            labels={SESSION_LABEL: session},
            mode=docker.types.ServiceMode("replicated-job", replicas=1),
        )["ID"]
        task_id = ""
        try:
            state, exit_code = "new", None
            deadline = time.monotonic() + RAW_TIMEOUT_SECONDS
            while time.monotonic() < deadline:
                tasks = api.tasks(filters={"service": service_id})
                if tasks:
                    task = max(tasks, key=lambda t: (t.get("Version") or {}).get("Index", 0))
                    task_id = task["ID"]
                    status = task.get("Status") or {}
                    state = status.get("State", "new")
                    exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
                    if state in ENDED_STATES:
                        break
                time.sleep(RAW_POLL_SECONDS)
            out["task_state"], out["exit_code"] = state, exit_code
            ended = time.perf_counter()
            for chunk in api.service_logs(
                service_id, stdout=True, stderr=True, follow=False, is_tty=False
            ):
                counter.feed(chunk)
            read = time.perf_counter()
            out["phases"] = {"until_ended": ended - started, "logs_read": read - ended}
            out["ok"] = state == "complete" and not exit_code
            if not out["ok"]:
                out["error"] = f"task {state}, exit code {exit_code}"
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_service(service_id)
            out["wall"] = out["run"] = time.perf_counter() - started
            out["cpu"] = time.process_time() - cpu_started
        # Not timed: the manager deletes the task, the worker its container, a moment later
        # (the Swarm client waits for the task's deletion inside its run()).
        gone_started = time.perf_counter()
        out["task_gone"] = wait_gone(lambda: task_exists(api, task_id))
        out["task_gone_wait"] = time.perf_counter() - gone_started
        out["container_gone"] = wait_gone(
            lambda: bool(cluster.worker.containers.list(all=True, filters={"label": SESSION_LABEL}))
        )
        out["container_gone_wait"] = time.perf_counter() - gone_started
        out["lines"] = counter.lines
        out["logs_bytes"] = counter.bytes
        return out

    return once, docker_client


def task_exists(api: Any, task_id: str) -> bool:
    import docker.errors

    if not task_id:
        return False
    try:
        api.inspect_task(task_id)
    except docker.errors.NotFound:
        return False
    return True


def wait_gone(exists: Callable[[], bool]) -> bool:
    """Wait (bounded) until ``exists()`` is false; whether it became so."""
    deadline = time.monotonic() + GONE_TIMEOUT_SECONDS
    while exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def time_launcher_phases(client: Any) -> dict[str, float]:
    """Time two steps of the Swarm client's launcher, for the JSON: ``_wait`` (service created
    until its task ended, the live log stream running meanwhile) and ``_read_rest`` (the second,
    non-follow read of the service's logs after the task ended). Private names: when they are
    not there, nothing is timed."""
    phases: dict[str, float] = {}
    launcher = getattr(client, "_launcher", None)
    for name, key in (("_wait", "until_ended"), ("_read_rest", "logs_read_again")):
        method = getattr(launcher, name, None)
        if method is None:
            continue

        def timed(*args: Any, _method: Any = method, _key: str = key, **kwargs: Any) -> Any:
            started = time.perf_counter()
            if _key == "logs_read_again":
                phases["live_stream_bytes"] = delivered(args)
            try:
                return _method(*args, **kwargs)
            finally:
                phases[_key] = time.perf_counter() - started
                if _key == "logs_read_again":
                    phases["total_bytes"] = delivered(args)

        setattr(launcher, name, timed)
    return phases


def delivered(args: tuple[Any, ...]) -> int:
    """Bytes delivered so far by the streams of ``_read_rest(service_id, counted)``."""
    counted = args[1] if len(args) > 1 else {}
    return sum(getattr(sink, "delivered", 0) for sink in getattr(counted, "values", list)())


# --------------------------------------------------------------------------------------------
# One runner's measurements
# --------------------------------------------------------------------------------------------


def measure(
    runner: Runner, once: Once, scenarios: list[str], params: dict[str, Any]
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    warmups = [once("trivial", bench.SCRIPT_NOOP) for _ in range(params["warmups"])]
    for scenario in scenarios:
        script = bench.flood_script(scenario, params)
        repeats = params["repeats"] if scenario == "trivial" else 1
        reset_peak_rss()
        runs = []
        for _ in range(repeats):
            try:
                runs.append(once(scenario, script))
            except Exception as exc:
                runs.append({"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]})
        record: dict[str, Any] = dict(runs[-1])
        record["peak_rss_mib"] = peak_rss_mib()
        if repeats > 1:
            record["runs"] = [r.get("run") for r in runs]
            record["walls"] = [r.get("wall") for r in runs]
            record["run_phases"] = [r.get("phases") for r in runs]
            timed = [r["run"] for r in runs if r.get("run") is not None]
            walls = [r["wall"] for r in runs if r.get("wall") is not None]
            record["run"] = statistics.median(timed) if timed else None
            record["wall"] = statistics.median(walls) if walls else None
        failed = [r for r in runs if not r.get("ok")]
        record["ok"] = not failed
        if failed:
            record["error"] = failed[0].get("error", "failed")
        if scenario == "stdout":
            record["expected_lines"] = expected_lines(params)
        results[scenario] = record
        print(f"  {runner.label}: {scenario}: {cell(scenario, record)}", flush=True)
    results["warmups"] = [{k: w.get(k) for k in ("run", "wall", "ok", "error")} for w in warmups]
    return results


def complete(scenario: str, record: dict[str, Any]) -> bool:
    """Whether the run succeeded and delivered everything (stdout lines, messages)."""
    if not record.get("ok"):
        return False
    if scenario == "stdout":
        return record.get("lines") == record.get("expected_lines") and not record.get("blank_lines")
    if scenario == "logs" and "delivered" in record:
        return record["delivered"] == record["expected"] and not record.get("duplicates")
    return True


def cell(scenario: str, record: dict[str, Any] | None) -> str:
    if record is None:
        return "-"
    if not record.get("ok"):
        return f"FAILED: {record.get('error', '?')}"[:160]
    text = f"{record['run']:.2f} s"
    if scenario == "stdout":
        lines, expected = record.get("lines", 0), record.get("expected_lines")
        if lines == expected:
            text += f", all {expected} lines"
        else:
            text += f", {lines}/{expected} lines (INCOMPLETE)"
        if record.get("blank_lines"):
            text += f" (+{record['blank_lines']} blank)"
    if scenario == "logs":
        if "delivered" in record:
            text += f", {record['delivered']}/{record['expected']}"
            if record["delivered"] != record["expected"]:
                text += " (INCOMPLETE)"
            if record.get("duplicates"):
                text += f" (+{record['duplicates']} dup)"
        else:
            text += ", —"
    return text


# --------------------------------------------------------------------------------------------
# What is left on the cluster
# --------------------------------------------------------------------------------------------


def leftovers(cluster: Any, session: str) -> dict[str, int]:
    """Services, configs and containers of ours still on the cluster.

    A run's service and configs are gone when ``run()`` returns; its ended task's container is
    removed by the node a few seconds later, so that is waited for (up to 30 s, as the tests do).
    """
    deadline = time.monotonic() + 30
    while True:
        found = _leftovers_now(cluster)
        if not any(found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _leftovers_now(cluster: Any) -> dict[str, int]:
    from pipes_docker import MANAGED_LABEL

    found = {}
    for label in (MANAGED_LABEL, SESSION_LABEL):
        services = cluster.manager.services.list(filters={"label": label})
        found[f"services {label}"] = len(services)
    found["configs"] = len(cluster.manager.configs.list(filters={"label": MANAGED_LABEL}))
    for node, client in (("manager", cluster.manager), ("worker", cluster.worker)):
        found[f"containers on {node}"] = len(
            client.containers.list(all=True, filters={"label": MANAGED_LABEL})
        ) + len(client.containers.list(all=True, filters={"label": SESSION_LABEL}))
    return found


def sweep(cluster: Any) -> None:
    """Remove services of the raw row the run left behind (the cluster goes anyway)."""
    import docker.errors

    for service in cluster.manager.services.list(filters={"label": SESSION_LABEL}):
        with contextlib.suppress(docker.errors.NotFound):
            service.remove()


def host_links() -> list[str]:
    done = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False)
    return [line for line in done.stdout.splitlines() if "pdsw" in line]


def host_node_containers() -> list[str]:
    done = subprocess.run(
        ["docker", "ps", "-a", "--format", "{{.Names}}", "--filter", "name=pipes-swarm-"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.split()


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def table(
    results: dict[str, Any], runners: list[Runner], scenarios: list[str], titles: dict[str, str]
) -> str:
    header = ["runner", *(titles[s] for s in scenarios)]
    rows = [
        [runner.label, *(cell(s, results.get(runner.key, {}).get(s)) for s in scenarios)]
        for runner in runners
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), separator, *(line(row) for row in rows)])


def details(results: dict[str, Any], runners: list[Runner], scenarios: list[str]) -> str:
    """A second table: materialize() wall time, CPU seconds and peak RSS of each measurement."""
    header = ["runner", *(f"{s}: wall s / CPU s / peak RSS MiB" for s in scenarios)]
    rows = []
    for runner in runners:
        row = [runner.label]
        for s in scenarios:
            record = results.get(runner.key, {}).get(s) or {}
            wall, cpu = record.get("wall"), record.get("cpu")
            rss = record.get("peak_rss_mib")
            if wall is None or cpu is None or not rss:
                row.append("-")
            else:
                row.append(f"{wall:.2f} / {cpu:.2f} / {rss:.0f}")
        rows.append(row)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), separator, *(line(row) for row in rows)])


def phases_table(results: dict[str, Any], scenarios: list[str]) -> str:
    """Where a Swarm run's time goes: until the task ended, reading the logs after it ended."""
    header = [
        "runner",
        "scenario",
        "until task ended s",
        "logs read after the end s",
        "rest s",
        "bytes of the live stream",
    ]
    rows = []
    for key in ("swarm", "raw"):
        for s in scenarios:
            record = results.get(key, {}).get(s) or {}
            phases = record.get("phases") or {}
            ended = phases.get("until_ended")
            read = phases.get("logs_read_again", phases.get("logs_read"))
            run = record.get("runs", [record.get("run")])[-1]  # the run the phases are of
            if ended is None or read is None or run is None:
                continue
            rest = run - ended - read
            live = phases.get("live_stream_bytes")
            total = phases.get("total_bytes")
            share = f"{live}/{total}" if live is not None and total is not None else "-"
            values = [f"{ended:.2f}", f"{read:.2f}", f"{rest:.2f}", share]
            rows.append([RUNNERS[key].label, s, *values])
    if not rows:
        return "(no phases were timed)"
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), separator, *(line(row) for row in rows)])


def markdown(meta: dict[str, Any], main_table: str, detail_table: str, phase_table: str) -> str:
    v = meta["versions"]
    params = meta["params"]
    mode = "quick" if meta["quick"] else "full"
    took = (
        f"{meta['total_seconds']:.0f} s in all: {meta['setup_seconds']:.0f} s to build the Swarm,"
        f" {meta['teardown_seconds']:.0f} s to take it down"
    )
    return f"""# pipes-docker on Docker Swarm: benchmark

Measured {meta["measured_at"]} by `benchmarks/swarm.py` ({mode} run, {took}).

* Machine: {meta["cpus"]} CPUs; load average before {meta["loadavg_before"]}, after
  {meta["loadavg_after"]} (1, 5, 15 min).
* Swarm: two Docker-in-Docker nodes, Engine {meta["node_engine"]}, vfs storage, on the host
  engine {v["docker-engine"]}; every job runs on the worker node, host networking inside it.
* Python {v["python"]}, dagster {v["dagster"]}, docker-py {v["docker"]}, pipes-docker
  {v["pipes-docker"]} at git {v["git"]}.

Seconds are those of the client's `run()` call inside the Dagster asset; for the raw row, from
`create_service` to the return of `remove_service`. Trivial run: the median of the runs after
the warm-up ({params["repeats"]} and {params["warmups"]}). Lines: the job's lines found in the
output the client kept (`stdout.log` of its `log_dir`), or, raw, in the service logs read.
Messages: distinct `pipes.log.info` messages found in the run's Dagster event log.

{main_table}

`materialize()` wall time (raw: the same as above), the CPU seconds of this process (all its
threads) and its peak RSS during the measurement (`VmHWM`, reset before each; for the trivial
run, over all its runs):

{detail_table}

Where the time of a Swarm run goes (one run each; for the trivial run, the last): from
creating the service until its task was seen ended (the Swarm client follows the service's logs
live meanwhile), the read of the service's logs after the end (the raw row's only read; the
Swarm client's second read, from the start, passing on only what the live stream had not
delivered), and the rest (creating, removing and, for the client, waiting for the task's
deletion and Dagster's Pipes session):

{phase_table}

{meta["final_check"]}
"""


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def engine_version(client: Any) -> str:
    found = client.version()
    return f"{found.get('Version', '?')}, API {found.get('ApiVersion', '?')}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 MiB, 5k messages, 3 runs")
    parser.add_argument("--runners", default=",".join(RUNNERS), help="of: swarm,single,raw")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="of: trivial,stdout,logs")
    parser.add_argument("--repeats", type=int, help="trivial runs (default 5, --quick 3)")
    parser.add_argument("--markdown", default=str(HERE / "swarm.md"))
    parser.add_argument("--json", default=str(HERE / "swarm.json"))
    args = parser.parse_args(argv)
    runners = [RUNNERS[key] for key in args.runners.split(",")]
    scenarios = [s for s in SCENARIOS if s in args.scenarios.split(",")]
    params = default_params(args.quick)
    if args.repeats:
        params["repeats"] = args.repeats

    # SIGTERM unwinds like Ctrl-C, so the finally blocks take down the Swarm.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.path.insert(0, str(ROOT))
    import docker

    from tests.integration.swarm import two_node_swarm

    started = time.monotonic()
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    session = uuid.uuid4().hex[:12]
    source = docker.from_env(timeout=300)
    results: dict[str, Any] = {}
    meta: dict[str, Any] = {
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "params": params,
        "cpus": os.cpu_count(),
        "versions": bench.versions(),
        "loadavg_before": loadavg_before,
    }
    log_dir = tempfile.mkdtemp(prefix="pipes-swarm-bench-", dir="/dev/shm")
    try:
        print("building the two-node Swarm ...", flush=True)
        with two_node_swarm(source) as cluster:
            meta["setup_seconds"] = round(time.monotonic() - started, 1)
            meta["node_engine"] = engine_version(cluster.manager)
            print(f"  up in {meta['setup_seconds']} s (nodes: {meta['node_engine']})", flush=True)
            try:
                for runner in runners:
                    if runner.kind == "raw":
                        once, client = make_raw_runner(cluster, params, session)
                    else:
                        once, client = make_dagster_runner(runner, cluster, params, log_dir)
                    try:
                        results[runner.key] = measure(runner, once, scenarios, params)
                    finally:
                        client.close()
                    results[runner.key]["left_on_cluster"] = leftovers(cluster, session)
            finally:
                sweep(cluster)
            teardown_started = time.monotonic()
        meta["teardown_seconds"] = round(time.monotonic() - teardown_started, 1)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
        source.close()
    meta["total_seconds"] = round(time.monotonic() - started, 1)
    meta["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    links, nodes = host_links(), host_node_containers()
    left = {k: v for r in results.values() for k, v in r["left_on_cluster"].items() if v}
    meta["final_check"] = (
        f"Final check: Swarm node containers left on the host: {len(nodes)}; pdsw links left:"
        f" {len(links)}; services/configs/containers of a run left on the cluster after a row:"
        f" {sum(left.values())}."
    )

    titles = scenario_titles(params)
    main_table = table(results, runners, scenarios, titles)
    detail_table = details(results, runners, scenarios)
    phase_table = phases_table(results, scenarios)
    print()
    print(main_table)
    print()
    print(meta["final_check"])
    meta["table"] = main_table.splitlines()
    Path(args.markdown).write_text(markdown(meta, main_table, detail_table, phase_table))
    Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"\nwrote {args.markdown} and {args.json} ({meta['total_seconds']:.0f} s)")
    ok = all(complete(s, results[r.key][s]) for r in runners for s in scenarios)
    return 0 if ok and not links and not nodes and not left else 1


if __name__ == "__main__":
    sys.exit(main())
