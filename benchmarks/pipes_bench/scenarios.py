"""What the benchmark runs: the container jobs, their parameters, and what a correct outcome is.

Every job is a Python script run in the container as ``python -c SCRIPT``. Each opens a Pipes
session, so the same script runs under every runner (the raw ``docker`` runners set the
bootstrap variables themselves, see ``runners.raw_pipes_env``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from typing import Any

IMAGE = "pipes-docker-testjob:latest"
ASSET_NAME = "bench_asset"
MESSAGE_PREFIX = "bench-msg "
MIB = 1024 * 1024
GIB = 1024 * MIB

# --------------------------------------------------------------------------------------------
# The jobs
# --------------------------------------------------------------------------------------------

SCRIPT_NOOP = "from dagster_pipes import open_dagster_pipes\nwith open_dagster_pipes():\n    pass\n"


def script_stdout(total_bytes: int, line_bytes: int) -> str:
    """``total_bytes`` to stdout in ``line_bytes``-long lines (newline included), 64 KiB a write."""
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
    """``count`` calls of ``pipes.log.info``, numbered so that the delivery check can count them."""
    return (
        "from dagster_pipes import open_dagster_pipes\n"
        "with open_dagster_pipes() as pipes:\n"
        "    info = pipes.log.info\n"
        f"    for i in range({count}):\n"
        f"        info(f'{MESSAGE_PREFIX}{{i}}')\n"
    )


def metadata_blob(total_bytes: int) -> str:
    """Deterministic, position-dependent text: any cut, reorder or duplicate changes it."""
    return "".join(f"{i:07d}," for i in range(total_bytes // 8))


def script_metadata(total_bytes: int) -> str:
    """One materialization whose metadata holds ``metadata_blob(total_bytes)``."""
    return (
        "from dagster_pipes import open_dagster_pipes\n"
        f"blob = ''.join(f'{{i:07d}},' for i in range({total_bytes // 8}))\n"
        "with open_dagster_pipes() as pipes:\n"
        "    pipes.report_asset_materialization(\n"
        "        metadata={'blob': {'raw_value': blob, 'type': 'text'}}\n"
        "    )\n"
    )


def script_sleep(seconds: float) -> str:
    """A job that does nothing for ``seconds``: what watching a running container costs."""
    return (
        "import time\n"
        "from dagster_pipes import open_dagster_pipes\n"
        "with open_dagster_pipes():\n"
        f"    time.sleep({seconds})\n"
    )


# --------------------------------------------------------------------------------------------
# Parameters and scenarios
# --------------------------------------------------------------------------------------------


SUITES = ("local", "transports", "swarm")


def default_params(quick: bool, suite: str = "local") -> dict[str, Any]:
    """The parameters of a full run of ``suite`` or of a ``--quick`` one."""
    params = {
        "startup_runs": 3 if quick else 15,  # warm no-op runs per runner; the median is shown
        "startup_warmup_runs": 1 if quick else 2,  # unmeasured no-op runs first: startup ...
        "warmup_runs": 1,  # ... and every other scenario's worker
        "fresh_runs": 3 if quick else 12,  # fresh processes per runner, interleaved
        "fresh_messages": 3,  # the fresh-process job's log.info calls
        "stdout_bytes": (20 if quick else 100) * MIB,
        "big_stdout_bytes": 100 * MIB if quick else GIB,
        "line_bytes": 128,
        "messages": 2_000 if quick else 20_000,
        "metadata_bytes": 5 * MIB,
        "concurrency": [2, 8] if quick else [8, 32],
        "concurrent_messages": 100,  # log.info calls of each concurrent run, counted per run
        "sleep_seconds": 2 if quick else 10,
        "sleep_runs": 1 if quick else 3,
        # dagster-docker's client is left out of the big stdout flood when its 100 MiB time,
        # scaled up, says it would take longer than this.
        "max_reference_seconds": 120,
    }
    if suite == "transports":
        params.update(startup_runs=3 if quick else 10, messages=5_000 if quick else 20_000)
    if suite == "swarm":
        params.update(startup_runs=3 if quick else 5, startup_warmup_runs=1)
        params.update(messages=5_000 if quick else 20_000)
    return params


def size_label(n_bytes: int) -> str:
    return f"{n_bytes // GIB} GiB" if n_bytes % GIB == 0 else f"{n_bytes // MIB} MiB"


# The rows of each scenario, in table order (runners.RUNNERS says what each key is). docker-py
# reads no output, so it is the floor only where output does not matter.
FLOODS = ("mounted", "streamed", "reference", "docker-run", "docker-run-nolog", "floor")
STARTUP = ("auto", "mounted", "mounted-nostats", "streamed", "streamed-noreattach", "reference")
STARTUP_FLOORS = ("docker-py", "docker-run", "docker-run-nolog", "floor")
FRESH = ("auto", "mounted", "streamed", "reference", "docker-py-logs")
TRANSPORTS = ("mounted", "streamed", "tcp", "reference-tcp", "docker-run-tcp")
TRANSPORTS += ("docker-run-nolog-tcp", "docker-run", "docker-run-nolog")
SWARM = ("swarm", "swarm-single", "swarm-raw")


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    job: str  # what the container does: "noop", "stdout", "logs", "metadata" or "sleep"
    runners: tuple[str, ...]
    repeats: int = 1  # measured runs, one after the other; the table gives the median
    concurrent: int = 0  # runs at once from the worker's threads (0: one run at a time)
    stdout_bytes: int = 0  # the stdout floods: how much
    warmups: int | None = None  # unmeasured no-op runs first (default: params["warmup_runs"])
    fresh: bool = False  # one run per fresh worker process, no warm-up, runners interleaved
    fixed_messages: int | None = None  # log.info calls of each run, when not params["messages"]

    def script(self, params: dict[str, Any]) -> str:
        if self.job == "stdout":
            return script_stdout(self.stdout_bytes, params["line_bytes"])
        if self.job == "logs":
            return script_logs(self.messages(params))
        if self.job == "metadata":
            return script_metadata(params["metadata_bytes"])
        if self.job == "sleep":
            return script_sleep(params["sleep_seconds"])
        return SCRIPT_NOOP

    def messages(self, params: dict[str, Any]) -> int:
        """How many ``pipes.log.info`` calls each run of this scenario makes."""
        if self.job != "logs":
            return 0
        if self.fixed_messages is not None:
            return self.fixed_messages
        return params["concurrent_messages"] if self.concurrent else params["messages"]


def scenarios(params: dict[str, Any], suite: str = "local") -> dict[str, Scenario]:
    """Every scenario of ``suite``, in the order they are measured and printed."""
    n = params["startup_runs"]
    startup = Scenario(
        "startup",
        f"no-op startup, warm worker (median of {n})",
        "noop",
        (*STARTUP, *STARTUP_FLOORS),
        repeats=n,
        warmups=params["startup_warmup_runs"],
    )
    stdout = Scenario(
        "stdout",
        f"{size_label(params['stdout_bytes'])} stdout",
        "stdout",
        ("mounted", "mounted-rules", "streamed", "streamed-noreattach", *FLOODS[2:]),
        stdout_bytes=params["stdout_bytes"],
    )
    logs = Scenario("logs", f"{params['messages']} pipes.log.info", "logs", FLOODS)
    if suite != "local":  # the same three scenarios, other rows
        chosen = TRANSPORTS if suite == "transports" else SWARM
        return {s.key: replace(s, runners=chosen) for s in (startup, stdout, logs)}
    found = [
        startup,
        Scenario(
            "startup-fresh",
            f"startup, one run per fresh process ({params['fresh_messages']} log.info; "
            f"median of {params['fresh_runs']})",
            "logs",
            FRESH,
            repeats=params["fresh_runs"],
            fresh=True,
            fixed_messages=params["fresh_messages"],
        ),
        stdout,
        replace(
            stdout,
            key="stdout-big",
            title=f"{size_label(params['big_stdout_bytes'])} stdout",
            stdout_bytes=params["big_stdout_bytes"],
        ),
        logs,
        Scenario(
            "metadata", f"{size_label(params['metadata_bytes'])} metadata value", "metadata", FLOODS
        ),
    ]
    for n in params["concurrency"]:
        found.append(
            Scenario(
                f"concurrent-{n}",
                f"{n} runs at once ({params['concurrent_messages']} log.info each)",
                "logs",
                ("mounted", "streamed", "reference", "reference-shared", "docker-py"),
                concurrent=n,
            )
        )
    found.append(
        Scenario(
            "sleep",
            f"{params['sleep_seconds']:g} s job (median of {params['sleep_runs']})",
            "sleep",
            ("mounted", "mounted-nostats"),
            repeats=params["sleep_runs"],
        )
    )
    return {s.key: s for s in found}


# --------------------------------------------------------------------------------------------
# What a correct outcome is
# --------------------------------------------------------------------------------------------


def analyse(
    job: str, params: dict[str, Any], out: dict[str, Any], messages: int | None = None
) -> dict[str, Any]:
    """Correctness figures for one measured run (``out``); drops the heavy objects it holds.

    ``job`` is the scenario's job kind; ``messages`` how many ``pipes.log.info`` calls the job
    made (default: ``params["messages"]``).
    """
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
    if job == "logs" and logs is not None:
        pattern = re.compile(re.escape(MESSAGE_PREFIX) + r"(\d+)$")
        seen: set[int] = set()
        total = 0
        for entry in logs:
            match = pattern.search(entry.user_message or "")
            if match and entry.dagster_event is None:
                total += 1
                seen.add(int(match.group(1)))
        expected = params["messages"] if messages is None else messages
        out["delivered"] = len(seen & set(range(expected)))
        out["expected"] = expected
        out["duplicates"] = total - len(seen)
    if job == "metadata":
        expected_blob = metadata_blob(params["metadata_bytes"])
        got = None
        for mat in result.asset_materializations_for_node(ASSET_NAME):
            if "blob" in mat.metadata:
                got = mat.metadata["blob"].value
        if got is None:
            out["intact"] = "missing"
        elif got == expected_blob:
            out["intact"] = "yes"
        else:
            out["intact"] = f"corrupt ({len(got)} of {len(expected_blob)} chars)"
        out["expected_sha256"] = hashlib.sha256(expected_blob.encode()).hexdigest()[:16]
    return out


def count_stdout_lines(path: str, line_bytes: int) -> dict[str, int]:
    """The job's stdout lines in what the orchestrator forwarded to ``path``, and the others."""
    expected = b"x" * (line_bytes - 1)
    found = {"lines": 0, "blank_lines": 0, "other_lines": 0, "bytes": 0}
    rest = b""
    with open(path, "rb") as f:
        while chunk := f.read(8 * MIB):
            found["bytes"] += len(chunk)
            pieces = (rest + chunk).split(b"\n")
            rest = pieces.pop()  # after the last newline: the start of the next line
            lines = pieces.count(expected)
            blank = pieces.count(b"")
            found["lines"] += lines
            found["blank_lines"] += blank
            found["other_lines"] += len(pieces) - lines - blank
    if rest:
        found["other_lines"] += 1
    return found
