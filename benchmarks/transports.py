#!/usr/bin/env python
"""Measure pipes-docker's two transports side by side: mounted and streamed, local and over TCP.

Rows (runners), all on the image pipes-docker-testjob:latest, every container with network
mode "none":

* pipes-docker with ``PipesDockerMountedChannel()`` and with ``PipesDockerStreamedChannel()`` on
  the local engine (its unix socket);
* pipes-docker with its default channel on a Docker-in-Docker engine over TCP, which shares no
  files with us, so the probe must pick "streamed" (checked on every run, as are the explicit
  channels, through the run metadata ``pipes_docker/transport``);
* dagster-docker's ``PipesDockerClient`` on the same DinD engine (it reads ``DOCKER_HOST``);
* ``docker run --rm --network none`` on the DinD and on the local engine, with the default log
  driver and with ``--log-driver none`` (pipes-docker's own default), as floors.

Columns (scenarios), the jobs of bench.py:

* no-op: a job that only opens and closes its Pipes session; median of 10 runs after 2 warm-ups;
* stdout flood: 100 MiB to stdout in 128-byte lines; every line is counted in what the
  orchestrator forwarded, and the orchestrator's peak RSS growth is taken (``VmHWM``);
* log flood: 20,000 ``pipes.log.info`` calls, counted in the run's Dagster event log.

Times are those of the client's ``run()`` call inside the asset (``docker run`` for the raw
rows); ``materialize()``'s wall time is in the JSON. Each (runner, scenario) pair runs in a fresh
worker process (this file with ``--worker``) that warms up first, as bench.py's do.

Usage (from the repository root, with the project's venv and a local Docker engine):

    .venv/bin/python benchmarks/transports.py           # full run
    .venv/bin/python benchmarks/transports.py --quick   # 3 runs, 5k messages, 20 MiB

Unless ``--docker-host tcp://...`` names an engine to use, the script brings up the DinD engine
of docker-compose.test.yml as its own compose project (``--compose-project``, default
pipes-docker-bench) on a free port (``--dind-port``, default 23760), loads the image into it, and
takes it down again (``down -v``) at the end, on errors and on Ctrl-C too. Containers it made
are found by their labels and removed after each measurement. The table is printed as markdown
and written, with all figures, to ``--json`` (default benchmarks/transports.json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
COMPOSE_FILE = ROOT / "docker-compose.test.yml"
IMAGE = bench.IMAGE
PING_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Runner:
    label: str
    kind: str  # "pipes", "reference" or "raw"
    remote: bool  # on the DinD engine (over TCP) rather than the local one
    channel: str | None = None  # pipes-docker: "mounted", "streamed", or None for the default
    expect_transport: str | None = None  # what the run metadata must say
    log_driver_none: bool = False  # raw: docker run --log-driver none


RUNNERS = {
    "mounted": Runner(
        "pipes-docker mounted (local socket)", "pipes", remote=False, channel="mounted",
        expect_transport="mounted",
    ),
    "streamed": Runner(
        "pipes-docker streamed (local socket)", "pipes", remote=False, channel="streamed",
        expect_transport="streamed",
    ),
    "tcp": Runner(
        "pipes-docker default over tcp (DinD)", "pipes", remote=True, expect_transport="streamed"
    ),
    "reference-tcp": Runner("dagster-docker reference over tcp", "reference", remote=True),
    "raw-dind": Runner("docker run --rm --network none (DinD)", "raw", remote=True),
    "raw-dind-nolog": Runner(
        "docker run ... --log-driver none (DinD)", "raw", remote=True, log_driver_none=True
    ),
    "raw-local": Runner("docker run --rm --network none (local)", "raw", remote=False),
    "raw-local-nolog": Runner(
        "docker run ... --log-driver none (local)", "raw", remote=False, log_driver_none=True
    ),
}  # fmt: skip
SCENARIOS = ("noop", "stdout", "logs")


def docker_cli(host: str | None) -> list[str]:
    return ["docker", "-H", host] if host else ["docker"]


# --------------------------------------------------------------------------------------------
# Worker: one (runner, scenario) measurement in its own process.
# --------------------------------------------------------------------------------------------

Once = Callable[..., dict[str, Any]]


def make_client(runner: Runner, docker_host: str | None) -> tuple[Any, dict[str, Any]]:
    """The Pipes client of a row, and the container_kwargs each of its runs needs."""
    if runner.kind == "reference":
        from dagster_docker import PipesDockerClient as ReferenceClient

        # It makes its docker client with docker.from_env(): DOCKER_HOST is set for the worker.
        return ReferenceClient(), {"network_mode": "none"}

    import docker

    from pipes_docker import (
        PipesDockerClient,
        PipesDockerMountedChannel,
        PipesDockerStreamedChannel,
    )

    kwargs: dict[str, Any] = {"container_kwargs": {"network_mode": "none"}, "forward_stdio": True}
    if runner.channel == "mounted":
        kwargs["channel"] = PipesDockerMountedChannel()
    elif runner.channel == "streamed":
        kwargs["channel"] = PipesDockerStreamedChannel()
    if runner.remote:
        kwargs["docker_client"] = docker.DockerClient(base_url=docker_host)
    return PipesDockerClient(**kwargs), {}


def make_dagster_runner(spec: dict[str, Any]) -> Once:
    """``once(script)``: materialize one asset whose body runs ``script`` with the row's client."""
    from dagster import DagsterInstance, asset, materialize

    runner = RUNNERS[spec["runner"]]
    client, base_kwargs = make_client(runner, spec.get("docker_host"))
    current: dict[str, Any] = {}

    @asset(name=bench.ASSET_NAME)
    def bench_asset(context):  # no annotation: `from __future__ import annotations` is on
        started = time.perf_counter()
        try:
            invocation = client.run(
                context=context,
                image=IMAGE,
                command=["python", "-c", current["script"]],
                container_kwargs={**base_kwargs, "labels": current["labels"]},
            )
        finally:
            current["run"] = time.perf_counter() - started
        result = invocation.get_materialize_result()
        value = (result.metadata or {}).get("pipes_docker/transport")
        current["transport"] = getattr(value, "value", value)
        return result

    def once(script: str, warmup: bool = False) -> dict[str, Any]:
        current.clear()
        current.update(script=script, labels=bench._labels(spec, warmup))
        stdout_path = os.devnull if warmup else spec.get("stdout_path") or os.devnull
        with DagsterInstance.ephemeral() as instance:
            started = time.perf_counter()
            with bench.fds_to_devnull(stdout_path):
                result = materialize([bench_asset], instance=instance, raise_on_error=False)
            out: dict[str, Any] = {
                "wall": time.perf_counter() - started,
                "run": current.get("run"),
                "ok": result.success,
                "transport": current.get("transport"),
                "peak_rss_kib": bench._proc_status_kib("VmHWM"),
            }
            if not result.success:
                out["error"] = bench._failure_message(result)
            elif runner.expect_transport and out["transport"] != runner.expect_transport:
                out["ok"] = False
                expected = runner.expect_transport
                out["error"] = f"transport was {out['transport']!r}, not {expected!r}"
            if not warmup:
                out["_result"] = result
                out["_logs"] = instance.all_logs(result.run_id)
        return out

    return once


def make_raw_runner(spec: dict[str, Any]) -> Once:
    """``once(script)``: ``docker run --rm --network none IMAGE python -c script``."""
    runner = RUNNERS[spec["runner"]]

    def once(script: str, warmup: bool = False) -> dict[str, Any]:
        cmd = [*docker_cli(spec.get("docker_host")), "run", "--rm", "--network", "none"]
        if runner.log_driver_none:
            cmd += ["--log-driver", "none"]
        for key, value in bench._labels(spec, warmup).items():
            cmd += ["--label", f"{key}={value}"]
        for key, value in bench.raw_pipes_env().items():
            cmd += ["-e", f"{key}={value}"]
        cmd += [IMAGE, "python", "-c", script]
        stdout_path = os.devnull if warmup else spec.get("stdout_path") or os.devnull
        started = time.perf_counter()
        with open(stdout_path, "wb") as sink:
            proc = subprocess.run(cmd, stdout=sink, stderr=subprocess.DEVNULL, check=False)
        wall = time.perf_counter() - started
        out: dict[str, Any] = {"wall": wall, "run": wall, "ok": proc.returncode == 0}
        if proc.returncode:
            out["error"] = f"docker run exited {proc.returncode}"
        return out

    return once


def worker(spec: dict[str, Any]) -> None:
    scenario, params = spec["scenario"], spec["params"]
    raw = RUNNERS[spec["runner"]].kind == "raw"
    once = make_raw_runner(spec) if raw else make_dagster_runner(spec)
    # Warm-ups: Dagster's lazy imports, the docker client, the probe (cached per engine).
    warmups = [once(bench.SCRIPT_NOOP, warmup=True) for _ in range(params["warmups"])]
    hwm_before = bench._proc_status_kib("VmHWM")
    repeats = params["repeats"] if scenario == "noop" else 1
    script = bench.flood_script(scenario, params)
    runs = [bench.analyse(scenario, spec, once(script)) for _ in range(repeats)]
    record: dict[str, Any] = dict(runs[-1])
    record["runs"] = [r["run"] for r in runs]
    record["walls"] = [r["wall"] for r in runs]
    record["warmup_runs"] = [w["run"] for w in warmups]
    record["transports"] = sorted({str(r.get("transport")) for r in runs + warmups} - {"None"})
    if repeats > 1:
        record["run"] = statistics.median(record["runs"])
        record["wall"] = statistics.median(record["walls"])
    failed = [r for r in warmups + runs if not r["ok"]]
    record["ok"] = not failed
    if failed:
        record["error"] = failed[0].get("error", "failed")
    if raw:  # the orchestrator here is the docker CLI; its RSS is no figure of ours
        record["peak_rss_kib"] = record["hwm_before_kib"] = None
    else:
        record["peak_rss_kib"] = max(r["peak_rss_kib"] for r in runs)
        record["hwm_before_kib"] = hwm_before
    Path(spec["out"]).write_text(json.dumps(record))


# --------------------------------------------------------------------------------------------
# Parent: the DinD engine, the workers, the clean-up.
# --------------------------------------------------------------------------------------------


def container_ids(host: str | None, *filters: str) -> list[str]:
    cmd = [*docker_cli(host), "ps", "-a", "-q", "--no-trunc"]
    for f in filters:
        cmd += ["--filter", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    return out.split()


def remove_containers(host: str | None, ids: list[str]) -> None:
    if ids:
        cmd = [*docker_cli(host), "rm", "-f", "-v", *ids]
        subprocess.run(cmd, capture_output=True, check=False, timeout=120)


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise RuntimeError("no free port on 127.0.0.1")


def wait_for_engine(address: str, still_up: Callable[[], bool]) -> None:
    import docker

    deadline = time.monotonic() + PING_TIMEOUT_SECONDS
    while True:
        with (
            contextlib.suppress(docker.errors.DockerException, OSError),
            contextlib.closing(docker.DockerClient(base_url=address, timeout=5)) as client,
        ):
            if client.ping():
                return
        if not still_up():
            raise RuntimeError(f"the engine's container exited before {address} answered")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{address} did not answer within {PING_TIMEOUT_SECONDS} s")
        time.sleep(0.5)


def load_image(address: str) -> None:
    """Copy IMAGE from the local engine to the one at ``address`` (docker save | docker load)."""
    import docker

    with (
        contextlib.closing(docker.from_env(timeout=300)) as local,
        contextlib.closing(docker.DockerClient(base_url=address, timeout=300)) as remote,
    ):
        with contextlib.suppress(docker.errors.ImageNotFound):
            remote.images.get(IMAGE)
            return
        print(f"[transports] loading {IMAGE} into {address} ...", file=sys.stderr, flush=True)
        remote.images.load(local.images.get(IMAGE).save(named=IMAGE))
        remote.images.get(IMAGE)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait while we tear down (compose down runs in its own session)."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def project_containers(project: str, *filters: str) -> list[str]:
    return container_ids(None, f"label=com.docker.compose.project={project}", *filters)


@contextlib.contextmanager
def dind_engine(project: str, preferred_port: int) -> Iterator[str]:
    """docker-compose.test.yml's DinD engine as compose project ``project``; yields its address."""
    if project_containers(project):
        sys.exit(
            f"compose project {project!r} already has containers: another run of this script, "
            f"or one that died? Check with `docker ps -a --filter "
            f"label=com.docker.compose.project={project}`, or pass --compose-project"
        )
    port = free_port(preferred_port)
    address = f"tcp://127.0.0.1:{port}"
    ssh_dir = tempfile.mkdtemp(prefix="pipes-docker-bench-ssh-")  # no authorized_keys: no sshd
    env = {
        **os.environ,
        "PIPES_DOCKER_DIND_PORT": str(port),
        "PIPES_DOCKER_DIND_SSH_PORT": str(free_port(0)),
        "PIPES_DOCKER_DIND_SSH_DIR": ssh_dir,
    }
    compose = ["docker-compose", "-f", str(COMPOSE_FILE), "-p", project]

    def compose_run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*compose, *args],
            env=env,
            capture_output=True,
            text=True,
            check=check,
            timeout=180,
            start_new_session=True,  # a Ctrl-C at the terminal goes to us, not to compose
        )

    print(f"[transports] bringing up DinD ({project}) at {address} ...", file=sys.stderr)
    try:
        try:
            compose_run("up", "-d")
            wait_for_engine(address, lambda: bool(project_containers(project, "status=running")))
        except (subprocess.CalledProcessError, RuntimeError, TimeoutError) as exc:
            detail = getattr(exc, "stderr", "") or ""
            logs = compose_run("logs", "--no-color", "--tail", "20", check=False).stdout
            raise RuntimeError(f"DinD did not come up: {exc}\n{detail}\n{logs}") from exc
        yield address
    finally:
        with signals_held():
            print(f"[transports] taking down {project} ...", file=sys.stderr, flush=True)
            down = compose_run("down", "-v", check=False)
            if down.returncode:
                print(f"[transports] compose down failed: {down.stderr}", file=sys.stderr)
            shutil.rmtree(ssh_dir, ignore_errors=True)


def run_worker(spec: dict[str, Any], workdir: Path, timeout: float) -> dict[str, Any]:
    call_dir = Path(tempfile.mkdtemp(prefix=f"{spec['scenario']}-{spec['runner']}-", dir=workdir))
    out_file, log_file, tmp = call_dir / "result.json", call_dir / "worker.log", call_dir / "tmp"
    tmp.mkdir()  # the worker's TMPDIR: the mounted channel's per-run dirs go here
    spec = {**spec, "out": str(out_file)}
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}
    env.pop("DAGSTER_HOME", None)
    if spec["docker_host"]:
        env["DOCKER_HOST"] = spec["docker_host"]  # for dagster-docker's docker.from_env()
    started = time.perf_counter()
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(ROOT),
            start_new_session=True,
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:  # also on Ctrl-C: the worker is in its own session and would live on
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    elapsed = time.perf_counter() - started
    if out_file.exists():
        record = json.loads(out_file.read_text())
    else:
        tail = log_file.read_text(errors="replace").strip().splitlines()[-3:]
        reason = "timed out" if elapsed >= timeout else f"worker exited {proc.returncode}"
        record = {"ok": False, "error": f"{reason}: {' | '.join(tail)[:300]}"}
    record["worker_seconds"] = round(elapsed, 2)
    record["loadavg_after"] = round(os.getloadavg()[0], 2)  # was something else running?
    record["temp_left"] = sum(1 for _ in tmp.iterdir())
    return record


def sweep(spec: dict[str, Any]) -> int:
    """Remove this measurement's containers; return how many the measured runs left."""
    host = spec["docker_host"]
    session = f"label={bench.LABEL_SESSION}={spec['session']}"
    left = container_ids(host, session, f"label={bench.LABEL_RUNNER}={spec['runner']}")
    warm = container_ids(host, session, f"label={bench.LABEL_RUNNER}={spec['runner']}-warmup")
    remove_containers(host, left + warm)
    return len(left)


def count_lines(path: Path, params: dict[str, Any]) -> dict[str, int]:
    """Lines of the job's stdout in what the orchestrator forwarded."""
    expected = b"x" * (params["line_bytes"] - 1) + b"\n"
    found = {"lines": 0, "blank": 0, "other": 0, "bytes": 0}
    if not path.exists():
        return found
    with open(path, "rb") as f:
        for line in f:
            found["bytes"] += len(line)
            key = "lines" if line == expected else "blank" if line == b"\n" else "other"
            found[key] += 1
    path.unlink()
    return found


def measure(spec: dict[str, Any], workdir: Path, timeout: float) -> dict[str, Any]:
    earlier: list[str] = []
    for _ in range(3):
        record = run_worker(spec, workdir, timeout)
        record["containers_left"] = sweep(spec)
        if spec.get("stdout_path"):
            record["stdout_check"] = count_lines(Path(spec["stdout_path"]), spec["params"])
            record["expected_lines"] = (
                spec["params"]["stdout_bytes"] // spec["params"]["line_bytes"]
            )
        # Killed from outside (a test suite sweeping pipes-docker's containers): try again.
        if record.get("ok") or not bench.killed_externally(record):
            break
        earlier.append(str(record.get("error")))
    if earlier:
        record["retried_after"] = earlier
    return record


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def seconds_cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    if not r.get("ok"):
        return "FAILED: " + str(r.get("error", "")).replace("|", "/").replace("\n", " ")[:100]
    return f"{r['run']:.2f}"


def lines_cell(r: dict[str, Any] | None, params: dict[str, Any]) -> str:
    check = (r or {}).get("stdout_check")
    if not check or not (r or {}).get("ok"):
        return "-"
    cell = f"{check['lines']}/{params['stdout_bytes'] // params['line_bytes']}"
    if check["blank"]:
        cell += f" (+{check['blank']} blank)"
    if check["other"]:
        cell += f" (+{check['other']} other)"
    return cell


def rss_cell(r: dict[str, Any] | None) -> str:
    if not r or not r.get("ok") or r.get("peak_rss_kib") is None:
        return "-"
    return f"{(r['peak_rss_kib'] - r['hwm_before_kib']) / 1024:.0f}"


def messages_cell(r: dict[str, Any] | None) -> str:
    if not r or not r.get("ok") or "delivered" not in r:
        return "-"
    cell = f"{r['delivered']}/{r['expected']}"
    if r.get("duplicates"):
        cell += f" (+{r['duplicates']} dup)"
    return cell


def complete(r: dict[str, Any]) -> bool:
    """Every stdout line and every message arrived (where the scenario checks that)."""
    check = r.get("stdout_check")
    if check and check["lines"] != r["expected_lines"]:
        return False
    return r.get("delivered", 0) == r.get("expected", 0)


def notes_cell(results: dict[str, dict[str, Any] | None]) -> str:
    notes = []
    for scenario, r in results.items():
        if r is None:
            continue
        if r.get("ok") and not complete(r):
            notes.append(f"{scenario}: INCOMPLETE")
        if r.get("warnings"):
            first = str(r.get("first_warning", "")).replace("|", "/")[:60]
            notes.append(f"{scenario}: {r['warnings']} warning(s): {first}...")
        if r.get("retried_after"):
            notes.append(f"{scenario}: retried {len(r['retried_after'])}x (killed from outside)")
    return "; ".join(notes)


def markdown_table(results: dict[tuple[str, str], dict[str, Any]], params: dict[str, Any]) -> str:
    headers = [
        "runner",
        "transport",
        f"no-op s (median of {params['repeats']})",
        f"{params['stdout_bytes'] >> 20} MiB stdout s",
        "stdout lines",
        "stdout +RSS MiB",
        f"{params['messages']} log.info s",
        "messages",
        "left behind",
        "notes",
    ]
    body = []
    for key in dict.fromkeys(runner for runner, _ in results):
        noop, out, logs = (results.get((key, s)) for s in SCENARIOS)
        done = [r for r in (noop, out, logs) if r]
        transports = sorted({t for r in done for t in r.get("transports", [])})
        left = sum(r.get("containers_left", 0) for r in done)
        tmp = sum(r.get("temp_left", 0) for r in done)
        body.append(
            [
                RUNNERS[key].label,
                ", ".join(transports) or "-",
                seconds_cell(noop),
                seconds_cell(out),
                lines_cell(out, params),
                rss_cell(out),
                seconds_cell(logs),
                messages_cell(logs),
                str(left) + (f" (+{tmp} tmp)" if tmp else ""),
                notes_cell(dict(zip(SCENARIOS, (noop, out, logs), strict=True))),
            ]
        )
    widths = [max(len(row[i]) for row in [headers, *body]) for i in range(len(headers))]
    numeric = {2, 3, 5, 6, 8}

    def line(cells: list[str]) -> str:
        padded = [
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    dashes = ["-" * (w + 1) + ":" if i in numeric else "-" * (w + 2) for i, w in enumerate(widths)]
    rule = "|" + "|".join(dashes) + "|"
    return "\n".join([line(headers), rule, *(line(row) for row in body)])


def engine_version(host: str | None) -> str:
    fmt = "{{.Server.Version}} (API {{.Server.APIVersion}})"
    cmd = [*docker_cli(host), "version", "--format", fmt]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
    return done.stdout.strip() or "?"


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 runs, 5k messages, 20 MiB")
    parser.add_argument("--docker-host", help="use this tcp:// engine instead of bringing up DinD")
    parser.add_argument("--dind-port", type=int, default=23760, help="preferred DinD port")
    parser.add_argument("--compose-project", default="pipes-docker-bench")
    parser.add_argument(
        "--runners", default=",".join(RUNNERS), help="comma list of " + ",".join(RUNNERS)
    )
    parser.add_argument("--timeout", type=float, default=600, help="per worker, seconds")
    parser.add_argument("--json", default=str(HERE / "transports.json"), help="results file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = set(args.runners.split(",")) - set(RUNNERS)
    if unknown:
        parser.error(f"unknown runner(s): {', '.join(sorted(unknown))}")
    if args.docker_host and not args.docker_host.startswith("tcp://"):
        parser.error("--docker-host must be a tcp:// address")
    return args


def bench_params(quick: bool) -> dict[str, Any]:
    return {
        "repeats": 3 if quick else 10,
        "warmups": 1 if quick else 2,
        "stdout_bytes": (20 if quick else 100) * 1024 * 1024,
        "line_bytes": 128,
        "messages": 5_000 if quick else 20_000,
    }


def measure_all(
    runners: list[str], params: dict[str, Any], host: str | None, session: str, timeout: float
) -> dict[tuple[str, str], dict[str, Any]]:
    results: dict[tuple[str, str], dict[str, Any]] = {}
    shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None
    with (
        tempfile.TemporaryDirectory(prefix="pipes-docker-transports-") as workdir,
        tempfile.TemporaryDirectory(prefix="pipes-docker-transports-", dir=shm) as outdir,
    ):
        for scenario in SCENARIOS:  # all rows of one scenario close together in time
            for runner in runners:
                print(f"[transports] {scenario} / {RUNNERS[runner].label} ...", file=sys.stderr)
                spec = {
                    "runner": runner,
                    "scenario": scenario,
                    "params": params,
                    "session": session,
                    # None: the local engine, as the docker CLI and docker-py find it.
                    "docker_host": host if RUNNERS[runner].remote else None,
                }
                if scenario == "stdout":
                    spec["stdout_path"] = str(Path(outdir) / f"{runner}.out")
                results[runner, scenario] = measure(spec, Path(workdir), timeout)
    return results


def final_check(docker_host: str | None, session: str, project: str | None) -> str:
    """Sweep what is still ours, then count what remains: our containers, the compose project.

    ``docker_host``: the remote engine given with --docker-host (our DinD went with its project).
    """
    label = f"label={bench.LABEL_SESSION}={session}"
    engines = [None] if docker_host is None else [None, docker_host]
    swept = 0
    for engine in engines:
        ids = container_ids(engine, label)
        remove_containers(engine, ids)
        swept += len(ids)
    remaining = sum(len(container_ids(engine, label)) for engine in engines)
    text = f"final check: {remaining} container(s) of this session remain ({swept} swept at end)"
    if project is not None:
        text += f"; compose project {project}: {len(project_containers(project))} container(s)"
    return text


def main() -> int:
    args = parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    # SIGTERM unwinds like Ctrl-C, so the finally blocks below take down what we started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    bench.preflight()
    params = bench_params(args.quick)
    runners = [r for r in args.runners.split(",") if r]
    session = uuid.uuid4().hex[:12]
    load_before = os.getloadavg()
    started = time.perf_counter()
    remote_needed = any(RUNNERS[r].remote for r in runners)
    project = args.compose_project if remote_needed and not args.docker_host else None
    host = remote_version = None
    results: dict[tuple[str, str], dict[str, Any]] = {}
    interrupted = False
    try:
        with contextlib.ExitStack() as stack:
            if project is not None:
                host = stack.enter_context(dind_engine(project, args.dind_port))
            elif remote_needed:
                host = args.docker_host
            if host is not None:
                load_image(host)
                remote_version = engine_version(host)
            results = measure_all(runners, params, host, session, args.timeout)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        check = final_check(args.docker_host if remote_needed else None, session, project)
    if interrupted:
        print(f"[transports] interrupted; {check}", file=sys.stderr)
        return 130
    total = time.perf_counter() - started

    text = markdown_table(results, params)
    versions = {**bench.versions(), "remote-engine": remote_version or "-"}
    meta = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "params": params,
        "remote": f"DinD {host} (compose project {project})" if project else host or "-",
        "versions": versions,
        "cpus": os.cpu_count(),
        "total_seconds": round(total, 1),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "final_check": check,
        "table": text.splitlines(),
    }
    print()
    print(text)
    print()
    print(
        f"mode={meta['mode']}  no-op: median of {params['repeats']} after {params['warmups']} "
        f"warm-up(s) per worker  stdout={params['stdout_bytes'] >> 20} MiB in "
        f"{params['line_bytes']}-byte lines  messages={params['messages']}  total {total:.0f} s"
    )
    print("seconds: time in the client's run() (docker run for the raw rows)")
    print(f"remote engine: {meta['remote']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    peak = max((r.get("loadavg_after", 0) for r in results.values()), default=0)
    print(
        f"load average (1 min) before/peak/after: {load_before[0]:.2f}/{peak:.2f}/"
        f"{meta['loadavg_after'][0]:.2f} on {os.cpu_count()} CPUs (peak: after a worker)"
    )
    print(check)
    rows = [{"runner": r, "scenario": s, "result": v} for (r, s), v in results.items()]
    Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"results written to {args.json}")
    return 0 if all(r.get("ok") and complete(r) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
