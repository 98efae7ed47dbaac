"""Command line: ``python -m benchmarks.pipes_bench [--suite local|transports|swarm]``.

Runs the scenarios of a suite (``scenarios.py``) under the runners of ``runners.py`` on the
engines the suite needs (``engines.py``), one worker process per measurement (``measure.py``),
and prints the results and writes them into the one report (``report.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .engines import LABEL_SESSION, Engines, docker_ids, engines_for, remove_containers
from .measure import PHASES, compile_packages, measure, preflight, worker
from .report import complete, versions, write_outputs
from .runners import ALIASES, RUNNERS
from .scenarios import IMAGE, MIB, SUITES, Scenario, default_params, scenarios, size_label

BENCHMARKS = Path(__file__).resolve().parent.parent
QUIET_LOAD = 1.5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pipes_bench",
        description="pipes-docker beside dagster-docker's client, docker-py and `docker run`, "
        "on the same image and engine. See benchmarks/README.md.",
    )
    parser.add_argument(
        "--suite",
        choices=SUITES,
        default="local",
        help="local: every scenario on the local engine; transports: mounted/streamed, local "
        "and over tcp (a DinD engine); swarm: a two-node Swarm (default local)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and few repetitions (~2 minutes)"
    )
    parser.add_argument("--dind-port", type=int, default=23760, help="preferred DinD port")
    parser.add_argument(
        "--runners", default="", help="comma list (default all) of " + ",".join(RUNNERS)
    )
    parser.add_argument(
        "--scenarios",
        default="",
        help="comma list (default all) of startup,startup-fresh,stdout,stdout-big,logs,"
        "metadata,concurrent (every level) or concurrent-N,sleep (transports, swarm: "
        "startup,stdout,logs)",
    )
    parser.add_argument("--messages", type=int, help="pipes.log.info calls (default 20000)")
    parser.add_argument("--stdout-mib", type=int, help="the stdout flood (default 100)")
    parser.add_argument("--big-stdout-mib", type=int, help="the big stdout flood (default 1024)")
    parser.add_argument("--line-bytes", type=int, help="stdout line length incl. newline (128)")
    parser.add_argument("--startup-runs", type=int, help="warm no-op runs per runner (15)")
    parser.add_argument("--fresh-runs", type=int, help="fresh processes per runner (12)")
    parser.add_argument("--concurrency", help="runs at once, comma list (default 8,32)")
    parser.add_argument("--sleep-seconds", type=float, help="the idle job's length (default 10)")
    parser.add_argument("--timeout", type=float, default=400, help="per worker, seconds")
    parser.add_argument(
        "--attempts", type=int, default=3, help="tries when a container is killed from outside"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="MINUTES",
        help=f"first wait (up to MINUTES) for 1-min load < {QUIET_LOAD} and no pytest running",
    )
    parser.add_argument("--json", default=str(BENCHMARKS / "results.json"), help="the report")
    parser.add_argument("--markdown", default=str(BENCHMARKS / "results.md"))
    parser.add_argument("--png", default=str(BENCHMARKS / "results.png"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build_params(args: argparse.Namespace) -> dict[str, Any]:
    params = default_params(args.quick, args.suite)
    for option, key, scale in (
        ("messages", "messages", 1),
        ("stdout_mib", "stdout_bytes", MIB),
        ("big_stdout_mib", "big_stdout_bytes", MIB),
        ("line_bytes", "line_bytes", 1),
        ("startup_runs", "startup_runs", 1),
        ("fresh_runs", "fresh_runs", 1),
        ("sleep_seconds", "sleep_seconds", 1),
    ):
        value = getattr(args, option)
        if value is not None:
            params[key] = value * scale
    if args.concurrency:
        params["concurrency"] = [int(n) for n in args.concurrency.split(",") if n]
    return params


def select(names: str, known: list[str], aliases: dict[str, tuple[str, ...]], what: str) -> list:
    if not names:
        return known
    chosen: list[str] = []
    for name in (n.strip() for n in names.split(",")):
        expanded = aliases.get(name) or ((name,) if name in known else ())
        if not expanded:
            sys.exit(f"unknown {what} {name!r}; known: {', '.join(known)}")
        chosen.extend(n for n in expanded if n not in chosen)
    return [n for n in known if n in chosen]


def busy() -> tuple[float, bool]:
    tests = subprocess.run(["pgrep", "-f", "pytest"], capture_output=True).returncode == 0
    return os.getloadavg()[0], tests


def wait_quiet(minutes: float) -> list[str]:
    """Wait until the machine is quiet, checking every 30 s; what was seen, for the notes."""
    deadline = time.monotonic() + minutes * 60
    while True:
        load, tests = busy()
        if load < QUIET_LOAD and not tests:
            return [f"machine quiet at start: load {load:.2f}, no pytest running"]
        if time.monotonic() >= deadline:
            return [
                f"WARNING: the machine never got quiet in {minutes:g} min (load {load:.2f}, "
                f"pytest {'running' if tests else 'not running'}): timings are noisy"
            ]
        print(
            f"[bench] waiting for quiet: load {load:.2f}, pytest "
            f"{'running' if tests else 'not running'}",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(30)


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = 0
    return (
        f"{os.cpu_count()} x {model}, {mem_kib / 1024 / 1024:.0f} GiB RAM, "
        f"Linux {platform.release()}"
    )


def reference_estimate(rows: list[dict[str, Any]], params: dict[str, Any]) -> float | None:
    """How long dagster-docker would take on the big flood, from its time on the small one."""
    for row in rows:
        if row["scenario"] == "stdout" and row["runner"] == "reference" and row["result"].get("ok"):
            return row["result"]["run"] * params["big_stdout_bytes"] / params["stdout_bytes"]
    return None


def fresh_record(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the runs of a fresh-process scenario: medians, and every run's figures."""
    record: dict[str, Any] = dict(runs[-1])
    for key, many in (("clock", "walls"), ("run", "runs"), ("cpu", "cpus")):
        record[many] = [r[key] for r in runs if r.get(key) is not None]
        record["wall" if key == "clock" else key] = (
            statistics.median(record[many]) if record[many] else None
        )
    for key in ("worker_seconds", "imports", "setup_modules"):
        record[key + "_all"] = [r.get(key) for r in runs]
        record[key] = statistics.median([r.get(key) or 0.0 for r in runs])
    for key in ("delivered", "expected", "duplicates", "containers_left", "temp_left"):
        if key in record:
            record[key] = sum(r.get(key, 0) for r in runs)
    record["peak_rss_kib"] = statistics.median([r.get("peak_rss_kib") or 0 for r in runs])
    record["hwm_before_kib"] = None
    failed = [r for r in runs if not r.get("ok")]
    record["ok"] = not failed
    if failed:
        record["error"] = f"{len(failed)} of {len(runs)} runs failed; first: {failed[0]['error']}"
    record["transports"] = sorted({str(r["transport"]) for r in runs if r.get("transport")})
    phases = [r["phases"] for r in runs if r.get("phases")]
    record["phases"] = (
        {name: statistics.median(p[name] for p in phases) for name in PHASES} if phases else None
    )
    record["phases_all"] = [r.get("phases") for r in runs]
    return record


def median_interval(diffs: list[float], level: float = 0.95) -> tuple[float, float]:
    """A bootstrap interval for the median of ``diffs`` (2000 resamples, a fixed seed): how
    far another set of rounds on the same machine could put it."""
    draw = random.Random(0)
    medians = sorted(statistics.median(draw.choices(diffs, k=len(diffs))) for _ in range(2000))
    tail = (1 - level) / 2
    return medians[int(tail * len(medians))], medians[int((1 - tail) * len(medians)) - 1]


def paired(runs: list[dict[str, Any]], reference: list[dict[str, Any]]) -> dict[str, Any]:
    """This runner against the reference, round by round (the runners of a round ran back to
    back, so what slowed the machine then slowed both): median differences, in seconds, with a
    95 % interval for the wall's, and the rounds this runner was faster in."""
    pairs = [
        (r, ref) for r, ref in zip(runs, reference, strict=True) if r.get("ok") and ref.get("ok")
    ]
    out: dict[str, Any] = {"rounds": len(pairs)}
    for key, name in (("clock", "wall"), ("worker_seconds", "process")):
        diffs = [
            r[key] - ref[key]
            for r, ref in pairs
            if r.get(key) is not None and ref.get(key) is not None
        ]
        if diffs:
            out[f"{name}_diff"] = statistics.median(diffs)
            out[f"{name}_faster"] = sum(d < 0 for d in diffs)
            if name == "wall":
                out["wall_diff_interval"] = median_interval(diffs)
    phased = [(r, ref) for r, ref in pairs if r.get("phases") and ref.get("phases")]
    if phased:
        out["phases_diff"] = {
            name: statistics.median(r["phases"][name] - ref["phases"][name] for r, ref in phased)
            for name in PHASES
        }
        # The engine's start request (~45 % of the wall, the same work for every client) varies
        # by tens of ms from run to run and drowns a few ms of client time: the wall without it
        # compares what the clients themselves do (the other phases) far more tightly.
        diffs = [
            (r["clock"] - r["phases"]["start"]) - (ref["clock"] - ref["phases"]["start"])
            for r, ref in phased
        ]
        out["unstarted_diff"] = statistics.median(diffs)
        out["unstarted_faster"] = sum(d < 0 for d in diffs)
        out["unstarted_diff_interval"] = median_interval(diffs)
    return out


def run_all(
    chosen: list[tuple[Scenario, str]],
    params: dict[str, Any],
    session: str,
    args: argparse.Namespace,
    engines: Engines,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None
    with (
        tempfile.TemporaryDirectory(prefix="pipes-docker-bench-") as workdir,
        tempfile.TemporaryDirectory(prefix="pipes-docker-bench-out-", dir=shm) as outdir,
    ):

        def one(scenario: Scenario, runner: str, **extra: Any) -> dict[str, Any]:
            spec = {
                "suite": args.suite,
                "scenario": scenario.key,
                "runner": runner,
                "params": params,
                "session": session,
                "urls": engines.urls,
                "swarm_worker": engines.swarm_worker,
                **extra,
            }
            where = (Path(workdir), args.timeout, args.attempts, Path(outdir), engines)
            return measure(spec, *where)

        fresh: dict[str, list[tuple[str, list[dict[str, Any]]]]] = {}
        for scenario, runner in chosen:
            if scenario.fresh:  # measured below, the runners interleaved
                fresh.setdefault(scenario.key, []).append((runner, []))
                continue
            if scenario.key == "stdout-big" and runner == "reference":
                estimate = reference_estimate(rows, params)
                limit = params["max_reference_seconds"]
                if estimate is not None and estimate > limit:
                    reason = (
                        f"about {estimate:.0f} s (> {limit} s), scaled from its "
                        f"{size_label(params['stdout_bytes'])} time"
                    )
                    rows.append(
                        {"scenario": scenario.key, "runner": runner, "result": {"skipped": reason}}
                    )
                    continue
            label = RUNNERS[runner].label
            print(f"[bench] {scenario.title} / {label} ...", file=sys.stderr, flush=True)
            rows.append(
                {"scenario": scenario.key, "runner": runner, "result": one(scenario, runner)}
            )
        known = scenarios(params, args.suite)
        if fresh:
            compile_packages()
        for key, runners in fresh.items():
            for i in range(known[key].repeats):
                print(f"[bench] {known[key].title}: round {i + 1}", file=sys.stderr, flush=True)
                # Each round begins one runner further on: no row always runs first or right
                # after the same row, so what a worker leaves the engine doing as it ends
                # (a removal, say) does not always land on the same one.
                shift = i % len(runners)
                for runner, runs in runners[shift:] + runners[:shift]:
                    runs.append(one(known[key], runner, fresh=True))
            reference = dict(runners).get("reference")
            for runner, runs in runners:
                record = fresh_record(runs)
                if reference is not None and runner != "reference":
                    record["vs_reference"] = paired(runs, reference)
                rows.append({"scenario": key, "runner": runner, "result": record})
    return rows


def final_check(session: str, foreign_before: set[str]) -> tuple[str, int]:
    """Sweep what is still ours; count the image's containers (others' are left alone)."""
    ours = docker_ids(None, f"label={LABEL_SESSION}={session}")
    remove_containers(None, ours)
    remaining = set(docker_ids(None, f"ancestor={IMAGE}"))
    new = sorted(remaining - foreign_before)
    text = (
        f"final check: {len(ours)} container(s) of this session swept at the end; "
        f"docker ps -a --filter ancestor={IMAGE} -> {len(remaining)} container(s)"
    )
    if remaining:
        text += " (not this bench's: no session label; left alone"
        if new:
            shown = ", ".join(c[:12] for c in new[:5]) + (", ..." if len(new) > 5 else "")
            text += f"; {len(new)} appeared during the run: {shown}"
        text += ")"
    return text, len(ours)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    params = build_params(args)
    if 65536 % params["line_bytes"]:
        sys.exit("--line-bytes must divide 65536")
    known = scenarios(params, args.suite)
    scenario_aliases = {"concurrent": tuple(k for k in known if k.startswith("concurrent-"))}
    picked = select(args.scenarios, list(known), scenario_aliases, "scenario")
    runners = select(args.runners, list(RUNNERS), ALIASES, "runner")
    chosen = [(known[k], r) for k in picked for r in known[k].runners if r in runners]
    if not chosen:
        sys.exit("nothing to measure: no chosen runner takes part in the chosen scenarios")

    # SIGTERM unwinds like Ctrl-C, so that the final sweep below still runs.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    preflight()
    notes = wait_quiet(args.wait_quiet) if args.wait_quiet else []
    load_before = os.getloadavg()
    if load_before[0] >= QUIET_LOAD and not notes:
        notes.append(f"WARNING: load {load_before[0]:.2f} at the start: timings are noisy")
    session = uuid.uuid4().hex[:12]
    foreign_before = set(docker_ids(None, f"ancestor={IMAGE}"))
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    needed = {RUNNERS[r].engine for _, r in chosen}
    try:
        with engines_for(args.suite, needed, session, args.dind_port) as engines:
            rows = run_all(chosen, params, session, args, engines)
    except KeyboardInterrupt:
        check, _ = final_check(session, foreign_before)
        print(f"[bench] interrupted; {check}", file=sys.stderr)
        return 130
    total = time.perf_counter() - started
    check, swept = final_check(session, foreign_before)
    load_after = os.getloadavg()
    peaks = [row["result"].get("loadavg_after", 0) for row in rows]
    meta = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "command": " ".join(["python -m benchmarks.pipes_bench", *(argv or sys.argv[1:])]),
        "params": params,
        "versions": {**versions(), **engines.versions},
        "machine": machine(),
        "cpus": os.cpu_count(),
        "total_seconds": round(total, 1),
        "loadavg": {
            "before": round(load_before[0], 2),
            "peak": round(max([load_before[0], *peaks]), 2),
            "after": round(load_after[0], 2),
        },
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "final_check": check,
        "final_sweep_removed": swept,
        "notes": notes,
    }
    text = write_outputs(
        args.suite, rows, meta, Path(args.json), Path(args.markdown), Path(args.png)
    )
    print()
    print(text)
    print(f"results written to {args.json}, {args.markdown} and {args.png}")
    # dagster-docker's failures are findings; the bench failed when another row did.
    ok = all(
        row["result"].get("skipped") or (row["result"].get("ok") and complete(row["result"]))
        for row in rows
        if not row["runner"].startswith("reference")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
