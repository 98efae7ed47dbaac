"""What the benchmark prints and writes: one report for every suite.

``results.json`` holds one entry per suite (``{"suites": {"local": {"meta", "rows"}, ...}}``);
a run of one suite replaces that suite's entry and leaves the others (measured at other times,
each with its own ``measured_at``) as they were. ``results.md`` and ``results.png`` are then
drawn again from every suite's entry.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .measure import PHASES, ROOT
from .runners import RUNNERS
from .scenarios import SUITES, scenarios

HEADERS = [
    "scenario",
    "runner",
    "wall s",
    "run() s",
    "CPU s",
    "peak RSS MiB",
    "+RSS MiB",
    "runs/s",
    "delivered",
    "left behind",
    "notes",
]
NUMERIC = {2, 3, 4, 5, 6, 7, 9}


def versions() -> dict[str, str]:
    from importlib.metadata import version

    found = {"python": platform.python_version()}
    for dist in ("dagster", "dagster-docker", "dagster-pipes", "docker", "pipes-docker"):
        try:
            found[dist] = version(dist)
        except Exception:
            found[dist] = "?"

    def output(*cmd: str) -> str:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30)
            return done.stdout.strip()
        except Exception:
            return "?"

    fmt = "{{.Server.Version}} (API {{.Server.APIVersion}})"
    found["docker-engine"] = output("docker", "version", "--format", fmt)
    found["git"] = output("git", "-C", str(ROOT), "describe", "--always", "--dirty")
    return found


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def seconds(value: Any) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value:.3f}"
    return f"{value:.2f}" if value < 100 else f"{value:.1f}"


def mib(kib: Any) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f}"


def rss_growth_kib(r: dict[str, Any]) -> int | None:
    if r.get("peak_rss_kib") is None or r.get("hwm_before_kib") is None:
        return None
    return int(r["peak_rss_kib"] - r["hwm_before_kib"])


def delivered_cell(job: str, runner: str, r: dict[str, Any]) -> str:
    if r.get("skipped"):
        return "-"
    if job == "stdout":
        if runner == "docker-py":
            return "not read"
        check = r.get("stdout_check")
        if not check:
            return "-"
        cell = f"{check['lines']}/{r['expected_lines']} lines"
        if check.get("blank_lines"):
            cell += f" (+{check['blank_lines']} blank)"
        if check.get("other_lines"):
            cell += f" (+{check['other_lines']} other)"
        return cell
    if job == "logs" and "delivered" in r:
        cell = f"{r['delivered']}/{r['expected']}"
        if r.get("concurrent"):
            cell = f"{r['runs_ok']}/{r['concurrent']} runs ok, {cell} msgs"
        if r.get("duplicates"):
            cell += f" (+{r['duplicates']} dup)"
        return cell
    if job == "logs" and r.get("concurrent"):
        return f"{r.get('runs_ok', 0)}/{r['concurrent']} runs ok"
    if job == "metadata" and "intact" in r:
        return f"intact: {r['intact']}"
    return "-"


def complete(r: dict[str, Any]) -> bool:
    """Every stdout line and every message arrived, where the scenario counts them."""
    check = r.get("stdout_check")
    if check and check["lines"] != r.get("expected_lines"):
        return False
    return r.get("delivered", 0) == r.get("expected", 0) and not r.get("duplicates")


def notes_cell(key: str, r: dict[str, Any]) -> str:
    if r.get("skipped"):
        return "skipped: " + r["skipped"]
    notes = []
    if not r.get("ok"):
        notes.append("FAILED: " + str(r.get("error", ""))[:90])
    elif not complete(r):
        notes.append("INCOMPLETE")
    if r.get("retried_after"):
        notes.append(f"retried {len(r['retried_after'])}x: container killed from outside")
    if r.get("warnings"):
        notes.append(f"{r['warnings']} warning(s)")
    runs = [x for x in r.get("runs") or [] if x is not None]
    if len(runs) > 1 and not r.get("concurrent"):
        notes.append(f"run() min/max {seconds(min(runs))}/{seconds(max(runs))}")
    if r.get("concurrent") and runs:
        notes.append(f"per-run run() median/max {seconds(r.get('run'))}/{seconds(max(runs))}")
    if key == "startup-fresh" and r.get("walls"):
        walls = r["walls"]
        notes.append(f"wall min/max {seconds(min(walls))}/{seconds(max(walls))}")
        notes.append(
            f"whole process {seconds(r.get('worker_seconds'))} (dagster and docker imported "
            f"before the clock in {seconds(r.get('imports'))}), medians"
        )
        phases = r.get("phases")
        if phases:
            ms = "/".join(f"{phases[name] * 1000:.0f}" for name in PHASES)
            notes.append(f"setup/to start/start/running/after exit {ms} ms")
        vs = r.get("vs_reference") or {}
        if vs.get("wall_diff") is not None:
            phases_diff = vs.get("phases_diff")
            by_phase = (
                "; phases " + "/".join(f"{phases_diff[n] * 1000:+.1f}" for n in PHASES) + " ms"
                if phases_diff
                else ""
            )
            low, high = vs.get("wall_diff_interval") or (vs["wall_diff"], vs["wall_diff"])
            notes.append(
                f"vs dagster-docker round by round: wall {vs['wall_diff'] * 1000:+.0f} ms (95 %"
                f" interval {low * 1000:+.0f} to {high * 1000:+.0f} ms), faster"
                f" in {vs['wall_faster']}/{vs['rounds']}; whole process"
                f" {vs.get('process_diff', 0) * 1000:+.0f} ms, faster in"
                f" {vs.get('process_faster', 0)}/{vs['rounds']}{by_phase} (median differences)"
            )
        if vs.get("unstarted_diff") is not None:
            low, high = vs["unstarted_diff_interval"]
            notes.append(
                f"wall without the engine's start request: {vs['unstarted_diff'] * 1000:+.1f} ms"
                f" (95 % interval {low * 1000:+.1f} to {high * 1000:+.1f} ms), faster in"
                f" {vs['unstarted_faster']}/{vs['rounds']}"
            )
    if key == "sleep":
        cpus = r.get("cpus") or []
        if len(cpus) > 1:
            notes.append(f"CPU min/max {min(cpus):.3f}/{max(cpus):.3f}")
        if r.get("engine_cpu") is not None:
            notes.append(f"engine CPU {r['engine_cpu']:.2f} s (dockerd+containerd, all runs)")
    return "; ".join(n.replace("|", "/") for n in notes)


def table_rows(suite: str, rows: list[dict[str, Any]], params: dict[str, Any]) -> list[list[str]]:
    known = scenarios(params, suite)
    body = []
    for row in rows:
        r, key, runner = row["result"], row["scenario"], row["runner"]
        scenario = known[key]
        growth = rss_growth_kib(r)
        left = str(r.get("containers_left", "-" if r.get("skipped") else "?"))
        if r.get("temp_left"):
            left += f" (+{r['temp_left']} tmp)"
        rate = r.get("runs_per_second")
        cpu = r.get("cpu")
        body.append(
            [
                scenario.title,
                RUNNERS[runner].label,
                seconds(r.get("wall")),
                seconds(r.get("run")),
                "-" if cpu is None else f"{cpu:.3f}" if cpu < 1 else f"{cpu:.2f}",
                mib(r.get("peak_rss_kib")),
                "-" if growth is None else f"{growth / 1024:.0f}",
                "-" if rate is None else f"{rate:.1f}",
                delivered_cell(scenario.job, runner, r),
                left,
                notes_cell(key, r),
            ]
        )
    return body


def markdown_table(suite: str, rows: list[dict[str, Any]], params: dict[str, Any]) -> str:
    body = table_rows(suite, rows, params)
    widths = [max(len(c[i]) for c in [HEADERS, *body]) for i in range(len(HEADERS))]

    def line(cells: list[str]) -> str:
        padded = [
            c.rjust(w) if i in NUMERIC else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (w + 1) + ":" if i in NUMERIC else "-" * (w + 2) for i, w in enumerate(widths)
        )
        + "|"
    )
    out = [line(HEADERS), rule]
    previous = None
    for cells in body:  # the scenario's name on its first row only
        out.append(line(cells if cells[0] != previous else ["", *cells[1:]]))
        previous = cells[0]
    return "\n".join(out)


def footer(meta: dict[str, Any]) -> list[str]:
    p = meta["params"]
    load = meta.get("loadavg") or {}
    lines = [
        f"mode={meta['mode']}  stdout lines of {p['line_bytes']} bytes  "
        f"warm startup: median of {p['startup_runs']} after {p['startup_warmup_runs']} no-op "
        f"run(s) per worker, {p['warmup_runs']} warm-up(s) per other worker  "
        f"total {meta['total_seconds']:.0f} s",
        "seconds: wall = materialize() (docker run / docker-py / service calls for the raw "
        "rows; the whole batch for runs at once), run() = the client's run() inside the asset "
        "(median per run for runs at once); CPU = the orchestrator process's user+sys seconds",
        "versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
    ]
    if "startup-fresh" in meta.get("scenarios", []):
        lines.append(
            "fresh process: one worker process per run, no warm-up, runners interleaved (each "
            "round begins one runner further on); every row imports dagster and docker and makes "
            "the Dagster instance before the clock starts; wall = from then until materialize() "
            "returns (docker-py: until the container is removed; pipes-docker removes it in the "
            "background, and the process waits for that before it exits), including setup: "
            "importing the row's own client package (pipes_docker or dagster_docker, from "
            "bytecode as pip installs it) and making its client, which a step process pays when "
            "it loads the code location; whole process = the worker's wall time seen by the "
            "parent"
        )
    if meta.get("machine"):
        lines.append(f"machine: {meta['machine']}")
    if load:
        lines.append(
            f"load average (1 min) before/peak/after: {load['before']:.2f}/{load['peak']:.2f}/"
            f"{load['after']:.2f} on {meta['cpus']} CPUs (peak: sampled after each worker)"
        )
    lines.append(meta["final_check"])
    lines.extend(meta.get("notes", []))
    return lines


def load_report(json_path: Path) -> dict[str, Any]:
    """The suites of the report at ``json_path`` (none when it is missing)."""
    if not json_path.exists():
        return {}
    return dict(json.loads(json_path.read_text()).get("suites", {}))


def write_outputs(
    suite: str,
    rows: list[dict[str, Any]],
    meta: dict[str, Any],
    json_path: Path,
    md_path: Path,
    png: Path,
) -> str:
    """Put ``suite``'s figures into the report; write the JSON, the markdown file and the plot.

    Returns the suite's text to print.
    """
    meta = {**meta, "scenarios": sorted({row["scenario"] for row in rows})}
    table = markdown_table(suite, rows, meta["params"])
    text = table + "\n\n" + "\n".join(footer(meta))
    suites = load_report(json_path)
    suites[suite] = {"meta": {**meta, "table": table.splitlines()}, "rows": rows}
    suites = {name: suites[name] for name in SUITES if name in suites}
    json_path.write_text(json.dumps({"suites": suites}, indent=2) + "\n")
    render(suites, md_path, png)
    return text


def render(suites: dict[str, Any], md_path: Path, png: Path) -> None:
    """``results.md`` and the plot, from every suite of the report."""
    md = ["# Benchmark results", "", "See benchmarks/README.md for what each column means.", ""]
    for name, entry in suites.items():
        meta = entry["meta"]
        how = meta.get("command") or "python -m benchmarks.pipes_bench --suite " + name
        md += [
            f"## Suite `{name}`",
            "",
            f"Measured {meta['measured_at']} with `{how}`.",
            "",
            markdown_table(name, entry["rows"], meta["params"]),
            "",
            *(f"- {line}" for line in footer(meta)),
            "",
        ]
    md_path.write_text("\n".join([*md, f"![results]({png.name})", ""]))
    plot(suites, png)


# --------------------------------------------------------------------------------------------
# The plot
# --------------------------------------------------------------------------------------------

# (scenario key, figure to plot, axis label, title suffix)
PANELS = [
    ("startup", "run", "run() s, median (whiskers: min-max)", ""),
    ("startup-fresh", "wall", "s from client made to materialize() end, median (min-max)", ""),
    ("stdout", "run", "run() s", ""),
    ("stdout-big", "run", "run() s", ""),
    ("stdout-big", "rss_growth_mib", "orchestrator peak RSS growth, MiB", ": RSS growth"),
    ("logs", "run", "run() s", ""),
    ("metadata", "run", "run() s", ""),
    ("concurrent", "runs_per_second", "runs per second (higher is better)", ""),
    ("sleep", "cpu", "orchestrator CPU s, median", ": stats sampling cost"),
]


@dataclass
class Bar:
    runner: str
    value: float | None  # None: skipped or failed
    text: str
    spread: tuple[float, float] = (0.0, 0.0)  # below and above the value (min/max whiskers)


def _bars(found: list[tuple[str, dict[str, Any]]], what: str) -> list[Bar]:
    bars = []
    for runner, r in found:
        if what == "rss_growth_mib":
            if runner in ("docker-run", "docker-run-nolog", "docker-py", "floor"):
                continue  # the docker CLI's RSS, or an orchestrator that reads no output
            growth = rss_growth_kib(r)
            value = None if growth is None else growth / 1024
        else:
            value = None if r.get(what) is None else float(r[what])
        if r.get("skipped") or not r.get("ok") or value is None:
            bars.append(Bar(runner, None, "skipped" if r.get("skipped") else "failed"))
            continue
        if what == "rss_growth_mib":
            text = f"{value:.0f} MiB"
        elif what == "runs_per_second":
            text = f"{value:.1f}/s"
        else:
            text = f"{value:.3f} s" if value < 1 else f"{value:.2f} s"
        runs = [x for x in r.get("runs") or [] if x is not None]
        spread = (0.0, 0.0)
        if what == "wall":
            runs = [x for x in r.get("walls") or [] if x is not None]
        if what in ("run", "wall") and len(runs) > 1 and not r.get("concurrent"):
            spread = (value - min(runs), max(runs) - value)
        bars.append(Bar(runner, value, text, spread))
    return bars


def _draw(ax: Any, title: str, label: str, bars: list[Bar], colors: dict[str, Any]) -> None:
    values = [b.value or 0.0 for b in bars]
    positive = [v for v in values if v > 0] or [1.0]
    # Log scale when the figures span more than 20x; the floor's (Dagster alone: next to
    # nothing for most jobs) does not count for that.
    spread = [b.value for b in bars if b.value and b.runner != "floor"]
    log = bool(spread) and max(spread) / min(spread) > 20
    # On a log axis a figure next to nothing is drawn at the axis' left end, its value beside.
    low = max(min(positive), max(positive) / 3000) / 2 if log else 0.0
    shown = [max(v, low) for v in values]
    y = list(range(len(bars)))[::-1]
    whiskers = [[b.spread[0] for b in bars], [b.spread[1] for b in bars]]
    ax.barh(
        y,
        shown,
        color=[colors[b.runner] for b in bars],
        xerr=whiskers if any(whiskers[1]) else None,
        capsize=3,
    )
    ax.set_yticks(y)
    ax.set_yticklabels([RUNNERS[b.runner].label for b in bars], fontsize=9)
    ax.set_title(title, fontsize=11, fontweight="bold")
    ax.set_xlabel(label + (" (log scale)" if log else ""), fontsize=9)
    ends = [x + b.spread[1] for x, b in zip(shown, bars, strict=True)]  # bar or whisker end
    if log:
        ax.set_xscale("log")
        ax.set_xlim(low, max(ends) * 6)
    else:
        ax.set_xlim(0, max(ends) * 1.3)
    for yi, x, bar in zip(y, ends, bars, strict=True):
        ax.text(x, yi, " " + bar.text, va="center", fontsize=8)
    ax.grid(axis="x", alpha=0.3)


def plot(suites: dict[str, Any], path: Path) -> None:
    """One panel per suite and scenario (two for the big flood: time, RSS), a bar per runner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {key: plt.get_cmap("tab20")(i % 20) for i, key in enumerate(RUNNERS)}
    panels = []
    for suite, entry in suites.items():
        known = scenarios(entry["meta"]["params"], suite)
        rows = entry["rows"]
        for key, what, label, suffix in PANELS:
            for scenario_key in (k for k in known if k == key or k.startswith(key + "-")):
                if key in ("stdout", "startup") and scenario_key != key:
                    continue  # "stdout-big" and "startup-fresh" have panels of their own
                found = [(r["runner"], r["result"]) for r in rows if r["scenario"] == scenario_key]
                bars = _bars(found, what)
                if bars:
                    title = f"[{suite}] {known[scenario_key].title}{suffix}"
                    panels.append((title, label, bars))
    if not panels:
        return
    ncols = 3
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(21, 4.2 * nrows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (title, label, bars) in zip(axes.flat, panels, strict=False):
        _draw(ax, title, label, bars, colors)
    fig.suptitle(
        "pipes-docker beside dagster-docker's client and the raw engine: same image, same engine"
        " per suite, every container with network none (host inside a Swarm node)",
        fontsize=13,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)
