#!/usr/bin/env python
"""Benchmark pipes-docker against dagster-docker's PipesDockerClient and plain `docker run`.

Usage (from the repository root):

    .venv/bin/python benchmarks/bench.py            # full run, ~3-4 minutes on 2 CPUs
    .venv/bin/python benchmarks/bench.py --quick    # 20k instead of 100k messages, ~1.5 minutes

Every measurement runs in a fresh worker subprocess (this same file with ``--worker``) so that
peak RSS figures belong to one measurement only. See benchmarks/README.md for what each column
means. Nothing here creates networks: every container runs with network mode "none".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IMAGE = "pipes-docker-testjob:latest"
LABEL_SESSION = "pipes-docker-bench.session"
LABEL_RUNNER = "pipes-docker-bench.runner"
ASSET_NAME = "bench_asset"
MESSAGE_PREFIX = "bench-msg "

RUNNERS = {
    "pipes": "pipes-docker",
    "reference": "dagster-docker (reference)",
    "raw": "docker run --rm",
    "raw-nolog": "docker run --rm --log-driver none",
    "floor": "floor: same work in-process",
}
SCENARIOS = {
    "stdout": "1. stdout flood",
    "logs": "2. pipes.log.info flood",
    "metadata": "3. 5 MiB metadata value",
    "startup": "4. no-op startup",
}

# --------------------------------------------------------------------------------------------
# The jobs, run in the container as `python -c SCRIPT`. Each opens a Pipes session, so the same
# script runs under all runners (raw docker gets the bootstrap env vars from `raw_pipes_env`).
# --------------------------------------------------------------------------------------------


def script_stdout(total_bytes: int, line_bytes: int) -> str:
    block_bytes = 64 * 1024
    lines_per_block = block_bytes // line_bytes
    blocks = total_bytes // (lines_per_block * line_bytes)
    return (
        "import sys\n"
        "from dagster_pipes import open_dagster_pipes\n"
        f"line = b'x' * {line_bytes - 1} + b'\\n'\n"
        f"block = line * {lines_per_block}\n"
        "with open_dagster_pipes():\n"
        "    write = sys.stdout.buffer.write\n"
        f"    for _ in range({blocks}):\n"
        "        write(block)\n"
        "    sys.stdout.buffer.flush()\n"
    )


def script_logs(count: int) -> str:
    return (
        "from dagster_pipes import open_dagster_pipes\n"
        "with open_dagster_pipes() as pipes:\n"
        "    info = pipes.log.info\n"
        f"    for i in range({count}):\n"
        f"        info(f'{MESSAGE_PREFIX}{{i}}')\n"
    )


def metadata_blob(total_bytes: int) -> str:
    """Deterministic, position-dependent text: any cut, reorder or duplicate changes its hash."""
    return "".join(f"{i:07d}," for i in range(total_bytes // 8))


def script_metadata(total_bytes: int) -> str:
    return (
        "from dagster_pipes import open_dagster_pipes\n"
        f"blob = ''.join(f'{{i:07d}},' for i in range({total_bytes // 8}))\n"
        "with open_dagster_pipes() as pipes:\n"
        "    pipes.report_asset_materialization(\n"
        "        metadata={'blob': {'raw_value': blob, 'type': 'text'}}\n"
        "    )\n"
    )


SCRIPT_NOOP = "from dagster_pipes import open_dagster_pipes\nwith open_dagster_pipes():\n    pass\n"


def job_script(scenario: str, params: dict[str, Any]) -> str:
    if scenario == "stdout":
        return script_stdout(params["stdout_bytes"], params["line_bytes"])
    if scenario == "logs":
        return script_logs(params["messages"])
    if scenario == "metadata":
        return script_metadata(params["metadata_bytes"])
    return SCRIPT_NOOP


# --------------------------------------------------------------------------------------------
# Worker: one measurement, in its own process.
# --------------------------------------------------------------------------------------------


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


@contextmanager
def fds_to_devnull(stdout_path: str = os.devnull) -> Iterator[None]:
    """Point fd 1 and 2 at /dev/null: the orchestrator still writes, nothing gets printed.

    ``stdout_path`` sends fd 1 to a file instead (the unmeasured forwarding check).
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


def raw_pipes_env() -> dict[str, str]:
    """Bootstrap env vars so the job's `open_dagster_pipes()` works under plain `docker run`.

    Context travels inline; messages go to the container's stderr (as with the reference client),
    where nobody reads them.
    """
    from dagster_pipes import encode_param

    context = {
        "asset_keys": [ASSET_NAME],
        "code_version_by_asset_key": {ASSET_NAME: None},
        "provenance_by_asset_key": {ASSET_NAME: None},
        "partition_key": None,
        "partition_key_range": None,
        "partition_time_window": None,
        "run_id": str(uuid.uuid4()),
        "job_name": "bench",
        "retry_number": 0,
        "extras": {},
    }
    return {
        "DAGSTER_PIPES_CONTEXT": encode_param({"data": context}),
        "DAGSTER_PIPES_MESSAGES": encode_param({"stdio": "stderr"}),
    }


def _labels(spec: dict[str, Any], warmup: bool) -> dict[str, str]:
    # Warm-up containers carry their own runner label: cleaned up, not counted as left behind.
    runner = spec["runner"] + ("-warmup" if warmup else "")
    return {LABEL_SESSION: spec["session"], LABEL_RUNNER: runner}


def make_raw_runner(spec: dict[str, Any]):
    def once(script: str, warmup: bool = False) -> dict[str, Any]:
        cmd = ["docker", "run", "--rm", "--network", "none"]
        if spec["runner"] == "raw-nolog":
            cmd += ["--log-driver", "none"]
        for key, value in _labels(spec, warmup).items():
            cmd += ["--label", f"{key}={value}"]
        for key, value in raw_pipes_env().items():
            cmd += ["-e", f"{key}={value}"]
        cmd += [IMAGE, "python", "-c", script]
        started = time.perf_counter()
        with open(spec.get("stdout_path") or os.devnull, "wb") as sink:
            proc = subprocess.run(cmd, stdout=sink, stderr=subprocess.DEVNULL, check=False)
        wall = time.perf_counter() - started
        out: dict[str, Any] = {"wall": wall, "run": wall, "ok": proc.returncode == 0}
        if proc.returncode != 0:
            out["error"] = f"docker run exited {proc.returncode}"
        return out

    return once


def make_pipes_runner(spec: dict[str, Any]):
    """Returns `once(script)`: materialize one asset whose body runs `script` with the client."""
    from dagster import DagsterInstance, asset, materialize

    if spec["runner"] == "pipes":
        from pipes_docker import PipesDockerClient

        client = PipesDockerClient(container_kwargs={"network_mode": "none"}, forward_stdio=True)
        base_kwargs: dict[str, Any] = {}
    else:
        from dagster_docker import PipesDockerClient as ReferenceClient

        client = ReferenceClient()
        # The reference has no client-level container_kwargs: network mode goes on every run.
        base_kwargs = {"network_mode": "none"}

    current: dict[str, Any] = {}

    @asset(name=ASSET_NAME)
    def bench_asset(
        context,
    ):  # no annotation: this module uses `from __future__ import annotations`
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
        return invocation.get_materialize_result()

    def once(script: str, warmup: bool = False) -> dict[str, Any]:
        current.clear()
        current.update(script=script, labels=_labels(spec, warmup))
        with DagsterInstance.ephemeral() as instance:
            started = time.perf_counter()
            with fds_to_devnull(spec.get("stdout_path") or os.devnull):
                result = materialize([bench_asset], instance=instance, raise_on_error=False)
            wall = time.perf_counter() - started
            out: dict[str, Any] = {"wall": wall, "run": current.get("run"), "ok": result.success}
            # Before the checks below allocate anything: the run's own peak.
            out["peak_rss_kib"] = _proc_status_kib("VmHWM")
            if not result.success:
                out["error"] = _failure_message(result)
            if not warmup:
                out["_result"] = result
                out["_logs"] = instance.all_logs(result.run_id)
        return out

    return once


def make_floor_runner(spec: dict[str, Any]):
    """The same work done in-process by the asset itself: what Dagster alone costs."""
    from dagster import DagsterInstance, MaterializeResult, MetadataValue, asset, materialize

    params = spec["params"]
    current: dict[str, Any] = {}
    # Built before the baseline is taken: making it is the job's work, not the orchestrator's.
    blob = metadata_blob(params["metadata_bytes"]) if spec["scenario"] == "metadata" else ""

    @asset(name=ASSET_NAME)
    def bench_asset(context):
        started = time.perf_counter()
        metadata = {}
        try:
            if current["job"] == "stdout":
                line_bytes = params["line_bytes"]
                block = ("x" * (line_bytes - 1) + "\n") * (65536 // line_bytes)
                for _ in range(params["stdout_bytes"] // 65536):
                    sys.stdout.write(block)
                    sys.stdout.flush()  # as a forwarding client does, once per chunk
            elif current["job"] == "logs":
                for i in range(params["messages"]):
                    context.log.info(f"{MESSAGE_PREFIX}{i}")
            elif current["job"] == "metadata":
                metadata["blob"] = MetadataValue.text(blob)
        finally:
            current["run"] = time.perf_counter() - started
        return MaterializeResult(metadata=metadata)

    def once(script: str, warmup: bool = False) -> dict[str, Any]:
        current.clear()
        current["job"] = "startup" if warmup else spec["scenario"]
        with DagsterInstance.ephemeral() as instance:
            started = time.perf_counter()
            with fds_to_devnull(spec.get("stdout_path") or os.devnull):
                result = materialize([bench_asset], instance=instance, raise_on_error=False)
            wall = time.perf_counter() - started
            out: dict[str, Any] = {"wall": wall, "run": current.get("run"), "ok": result.success}
            out["peak_rss_kib"] = _proc_status_kib("VmHWM")
            if not result.success:
                out["error"] = _failure_message(result)
            if not warmup:
                out["_result"] = result
                out["_logs"] = instance.all_logs(result.run_id)
        return out

    return once


def _failure_message(result: Any) -> str:
    for event in result.all_events:
        if event.is_failure and event.step_failure_data is not None:
            error = event.step_failure_data.error
            while (
                error is not None
                and error.cause is not None
                and "DagsterExecutionStep" in (error.cls_name or "")
            ):
                error = error.cause
            if error is not None:
                return f"{error.cls_name}: {error.message.strip().splitlines()[0][:200]}"
    return "run failed"


def analyse(scenario: str, spec: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """Correctness figures for one measured run; drops the heavy objects."""
    result = out.pop("_result", None)
    logs = out.pop("_logs", None)
    if result is None:
        return out
    if logs is not None:
        warnings = [
            e.user_message
            for e in logs
            if e.level >= 30 and e.dagster_event is None and e.user_message
        ]
        out["warnings"] = len(warnings)
        if warnings:
            out["first_warning"] = warnings[0][:300]
    if scenario == "logs" and logs is not None:
        pattern = re.compile(re.escape(MESSAGE_PREFIX) + r"(\d+)$")
        seen: set[int] = set()
        total = 0
        for entry in logs:
            match = pattern.search(entry.user_message or "")
            if match and entry.dagster_event is None:
                total += 1
                seen.add(int(match.group(1)))
        expected = spec["params"]["messages"]
        out["delivered"] = len(seen & set(range(expected)))
        out["expected"] = expected
        out["duplicates"] = total - len(seen)
    if scenario == "metadata":
        expected = metadata_blob(spec["params"]["metadata_bytes"])
        got = None
        for mat in result.asset_materializations_for_node(ASSET_NAME):
            if "blob" in mat.metadata:
                got = mat.metadata["blob"].value
        if got is None:
            out["intact"] = "missing"
        elif got == expected:
            out["intact"] = "yes"
        else:
            out["intact"] = f"corrupt ({len(got)} of {len(expected)} chars)"
        out["expected_sha256"] = hashlib.sha256(expected.encode()).hexdigest()[:16]
    return out


def worker(spec: dict[str, Any]) -> None:
    scenario, runner = spec["scenario"], spec["runner"]
    script = job_script(scenario, spec["params"])
    raw = runner in ("raw", "raw-nolog")
    if raw:
        once = make_raw_runner(spec)
    elif runner == "floor":
        once = make_floor_runner(spec)
    else:
        once = make_pipes_runner(spec)

    # Warm up with no-op runs first: Dagster's lazy imports, the docker client, the page cache.
    # The baseline RSS is taken after them, so "+RSS" is what the scenario itself added.
    for _ in range(spec["params"]["warmup_runs"]):
        once(SCRIPT_NOOP, warmup=True)
    hwm_before = _proc_status_kib("VmHWM")
    repeats = spec["params"]["startup_runs"] if scenario == "startup" else 1
    runs = [analyse(scenario, spec, once(script)) for _ in range(repeats)]
    record: dict[str, Any] = dict(runs[-1])
    if repeats > 1:
        walls = [r["wall"] for r in runs]
        inner = [r["run"] for r in runs if r.get("run") is not None]
        record["wall"] = statistics.median(walls)
        record["run"] = statistics.median(inner) if inner else None
        record["walls"] = walls
        record["ok"] = all(r["ok"] for r in runs)
        failed = [r["error"] for r in runs if not r["ok"]]
        if failed:
            record["error"] = failed[0]
    if raw:
        # The orchestrator here is the docker CLI process, not this thin worker.
        record["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        record["hwm_before_kib"] = None
    else:
        record["peak_rss_kib"] = max(r.get("peak_rss_kib") or 0 for r in runs)
        record["hwm_before_kib"] = hwm_before
    Path(spec["out"]).write_text(json.dumps(record))


# --------------------------------------------------------------------------------------------
# Parent: run the workers, clean up, print.
# --------------------------------------------------------------------------------------------


def docker_ids(*filters: str) -> list[str]:
    cmd = ["docker", "ps", "-a", "-q", "--no-trunc"]
    for f in filters:
        cmd += ["--filter", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return out.split()


def remove_containers(ids: list[str]) -> None:
    if ids:
        subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True, check=False)


def preflight() -> None:
    try:
        subprocess.run(["docker", "version"], capture_output=True, check=True, timeout=30)
    except Exception as exc:
        sys.exit(f"Docker engine not reachable: {exc}")
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode:
        print(f"{IMAGE} is missing; building it with images/build.sh", file=sys.stderr)
        subprocess.run([str(ROOT / "images" / "build.sh")], check=True)


def run_worker(spec: dict[str, Any], workdir: Path, timeout: float) -> dict[str, Any]:
    # A fresh dir per call: retries and the stdout check must never read an older result.
    call_dir = Path(tempfile.mkdtemp(prefix=f"{spec['scenario']}-{spec['runner']}-", dir=workdir))
    out_file = call_dir / "result.json"
    log_file = call_dir / "worker.log"
    tmp = call_dir / "tmp"  # the worker's TMPDIR: pipes-docker's per-run temp dirs go here
    tmp.mkdir()
    spec = {**spec, "out": str(out_file)}
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}
    env.pop("DAGSTER_HOME", None)
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
            os.killpg(proc.pid, 9)
            proc.wait()
    elapsed = time.perf_counter() - started
    record: dict[str, Any]
    if out_file.exists():
        record = json.loads(out_file.read_text())
    else:
        tail = log_file.read_text(errors="replace").strip().splitlines()[-3:]
        reason = "timed out" if elapsed >= timeout else f"worker exited {proc.returncode}"
        record = {"ok": False, "error": f"{reason}: {' | '.join(tail)[:300]}"}
    record["worker_seconds"] = elapsed
    # What the runner left behind: containers (found by our labels) and temp dirs.
    left = docker_ids(
        f"label={LABEL_SESSION}={spec['session']}", f"label={LABEL_RUNNER}={spec['runner']}"
    )
    record["containers_left"] = len(left)
    warm = docker_ids(
        f"label={LABEL_SESSION}={spec['session']}", f"label={LABEL_RUNNER}={spec['runner']}-warmup"
    )
    record["warmup_containers_left"] = len(warm)
    remove_containers(left + warm)
    record["temp_left"] = sum(1 for _ in tmp.iterdir())
    shutil.rmtree(tmp, ignore_errors=True)
    return record


def killed_externally(record: dict[str, Any]) -> bool:
    """A container that died of SIGKILL without hitting a memory limit.

    Seen when something else on the same engine force-removes containers carrying pipes-docker's
    `io.pipes-docker.managed` label while ours runs (the project's own integration-test fixture
    sweeps every such container before and after each test). Not a result worth keeping.
    """
    error = str(record.get("error", ""))
    return "exited with code 137" in error and "OOM" not in error and "memory" not in error


def measure(spec: dict[str, Any], workdir: Path, timeout: float, attempts: int) -> dict[str, Any]:
    earlier: list[str] = []
    for _ in range(attempts):
        record = run_worker(spec, workdir, timeout)
        if record.get("ok") or not killed_externally(record):
            break
        earlier.append(str(record.get("error")))
    if earlier:
        record["retried_after"] = earlier
    return record


def verify_stdout(spec: dict[str, Any], workdir: Path, timeout: float) -> dict[str, Any]:
    """Unmeasured second run of scenario 1 with fd 1 in a file: was every line forwarded?"""
    path = workdir / f"stdout-{spec['runner']}.out"
    record = run_worker({**spec, "stdout_path": str(path)}, workdir, timeout)
    params = spec["params"]
    line = b"x" * (params["line_bytes"] - 1) + b"\n"
    expected_lines = params["stdout_bytes"] // params["line_bytes"]
    found = {"ok": bool(record.get("ok")), "expected_lines": expected_lines}
    if path.exists():
        data = path.read_bytes()
        found["bytes"] = len(data)
        found["lines"] = data.count(line)
        found["blank_lines"] = data.count(b"\n\n")
        path.unlink()
    if not record.get("ok"):
        found["error"] = record.get("error")
    return found


def fmt_seconds(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def fmt_mib(kib: Any) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f}"


def delivered_cell(scenario: str, r: dict[str, Any]) -> str:
    if scenario == "logs" and "delivered" in r:
        cell = f"{r['delivered']}/{r['expected']}"
        if r.get("duplicates"):
            cell += f" (+{r['duplicates']} dup)"
        return cell
    if scenario == "metadata" and "intact" in r:
        return f"intact: {r['intact']}"
    check = r.get("stdout_check")
    if scenario == "stdout" and check:
        if "lines" not in check:
            return "check failed"
        cell = f"{check['lines']}/{check['expected_lines']} lines"
        if check.get("blank_lines"):
            cell += f" (+{check['blank_lines']} blank)"
        return cell
    return "-"


def table(rows: list[dict[str, Any]]) -> str:
    headers = [
        "scenario",
        "runner",
        "wall s",
        "run() s",
        "peak RSS MiB",
        "+RSS MiB",
        "delivered",
        "left behind",
        "notes",
    ]
    body = []
    for row in rows:
        r = row["result"]
        growth = None
        if r.get("peak_rss_kib") is not None and r.get("hwm_before_kib") is not None:
            growth = r["peak_rss_kib"] - r["hwm_before_kib"]
        notes = []
        if not r.get("ok"):
            notes.append("FAILED: " + str(r.get("error", ""))[:90])
        if r.get("retried_after"):
            notes.append(f"retried {len(r['retried_after'])}x: container killed from outside")
        if r.get("warnings"):
            notes.append(f"{r['warnings']} warning(s)")
        if row["scenario"] == "startup" and r.get("walls"):
            notes.append(
                "min/max " + "/".join(f"{x:.2f}" for x in (min(r["walls"]), max(r["walls"])))
            )
        left = str(r.get("containers_left", "?"))
        if r.get("temp_left"):
            left += f" (+{r['temp_left']} tmp)"
        body.append(
            [
                SCENARIOS[row["scenario"]],
                RUNNERS[row["runner"]],
                fmt_seconds(r.get("wall")),
                fmt_seconds(r.get("run")),
                fmt_mib(r.get("peak_rss_kib")),
                "-" if growth is None else f"{growth / 1024:.0f}",
                delivered_cell(row["scenario"], r),
                left,
                "; ".join(notes),
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *body, strict=True)]
    numeric = {2, 3, 4, 5, 7}

    def line(cells: list[str]) -> str:
        return "  ".join(
            (c.rjust(w) if i in numeric else c.ljust(w))
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    previous = None
    for cells in body:
        if previous is not None and cells[0] != previous:
            out.append("")
        out.append(line(cells if cells[0] != previous else ["", *cells[1:]]))
        previous = cells[0]
    return "\n".join(out)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    found = {"python": platform.python_version()}
    for dist in ("dagster", "dagster-docker", "dagster-pipes", "docker", "pipes-docker"):
        try:
            found[dist] = version(dist)
        except Exception:
            found[dist] = "?"
    try:
        found["docker-engine"] = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except Exception:
        found["docker-engine"] = "?"
    try:
        found["git"] = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except Exception:
        found["git"] = "?"
    return found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20k messages instead of 100k")
    parser.add_argument(
        "--runners", default=",".join(RUNNERS), help="comma list of " + ",".join(RUNNERS)
    )
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="comma list of " + ",".join(SCENARIOS)
    )
    parser.add_argument("--messages", type=int, help="scenario 2 message count")
    parser.add_argument("--stdout-mib", type=int, default=100, help="scenario 1 size (default 100)")
    parser.add_argument(
        "--line-bytes", type=int, default=128, help="scenario 1 line length incl. newline"
    )
    parser.add_argument("--timeout", type=float, default=240, help="per-measurement limit, seconds")
    parser.add_argument(
        "--attempts",
        type=int,
        default=3,
        help="tries per measurement when a container is killed from outside",
    )
    parser.add_argument(
        "--no-verify-stdout",
        action="store_true",
        help="skip the unmeasured scenario-1 rerun that counts forwarded lines",
    )
    parser.add_argument("--json", default=str(HERE / "results.json"), help="where to write results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        worker(json.loads(args.worker))
        return 0

    runners = [r for r in args.runners.split(",") if r]
    scenarios = [s for s in args.scenarios.split(",") if s]
    for name in runners:
        if name not in RUNNERS:
            parser.error(f"unknown runner {name!r}")
    for name in scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}")
    if 65536 % args.line_bytes:
        parser.error("--line-bytes must divide 65536")

    params = {
        "stdout_bytes": args.stdout_mib * 1024 * 1024,
        "line_bytes": args.line_bytes,
        "messages": args.messages or (20_000 if args.quick else 100_000),
        "metadata_bytes": 5 * 1024 * 1024,
        "startup_runs": 5,
        "warmup_runs": 1,
    }
    preflight()
    load_before = os.getloadavg()
    session = uuid.uuid4().hex[:12]
    foreign_before = set(docker_ids(f"ancestor={IMAGE}"))
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pipes-docker-bench-") as workdir:
        for scenario in scenarios:
            for runner in runners:
                print(
                    f"[bench] {SCENARIOS[scenario]} / {RUNNERS[runner]} ...",
                    file=sys.stderr,
                    flush=True,
                )
                spec = {
                    "scenario": scenario,
                    "runner": runner,
                    "params": params,
                    "session": session,
                }
                result = measure(spec, Path(workdir), args.timeout, args.attempts)
                if scenario == "stdout" and not args.no_verify_stdout:
                    result["stdout_check"] = verify_stdout(spec, Path(workdir), args.timeout)
                rows.append({"scenario": scenario, "runner": runner, "result": result})
    total = time.perf_counter() - started

    # Final sweep: nothing of ours may remain; containers of others are reported, never touched.
    ours = docker_ids(f"label={LABEL_SESSION}={session}")
    remove_containers(ours)
    remaining = set(docker_ids(f"ancestor={IMAGE}"))
    foreign_new = sorted(remaining - foreign_before)

    meta = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "params": params,
        "versions": versions(),
        "cpus": os.cpu_count(),
        "total_seconds": round(total, 1),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "final_sweep_removed": len(ours),
        "containers_of_image_after": len(remaining),
    }
    text = table(rows)
    meta["table"] = text.splitlines()
    print()
    print(text)
    print()
    print(
        f"mode={meta['mode']}  stdout={args.stdout_mib} MiB in {args.line_bytes}-byte lines  "
        f"messages={params['messages']}  metadata=5 MiB  startup=median of {params['startup_runs']}"
        f"; every worker warms up with {params['warmup_runs']} no-op run(s)  total {total:.0f} s"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    print(
        f"load average (1 min) before/after: {load_before[0]:.2f}/{meta['loadavg_after'][0]:.2f}"
        f" on {os.cpu_count()} CPUs"
        + (
            "  -- the machine was busy: timings are noisy"
            if load_before[0] > 0.5 * (os.cpu_count() or 1)
            else ""
        )
    )
    final = f"final check: docker ps -a --filter ancestor={IMAGE} -> {len(remaining)} container(s)"
    if foreign_new:
        names = ", ".join(c[:12] for c in foreign_new)
        final += f" ({len(foreign_new)} new, not labelled by this bench, left alone: {names})"
    print(final)
    Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"results written to {args.json}")
    return 0 if all(r["result"].get("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
