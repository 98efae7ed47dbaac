#!/usr/bin/env python
"""Benchmark pipes-docker against dagster-docker's PipesDockerClient, docker-py and `docker run`.

Usage (from the repository root):

    .venv/bin/python benchmarks/bench.py            # full run, about 9 minutes on 2 CPUs
    .venv/bin/python benchmarks/bench.py --quick    # small sizes, about 2 minutes

The benchmark itself is the package next to this file, ``pipes_bench`` (scenarios, runners,
measure, report); this file runs it, and keeps the names other scripts (transports.py) import
from ``bench``. See benchmarks/README.md for what each column means.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipes_bench.__main__ import main
from pipes_bench.measure import (
    LABEL_RUNNER,
    LABEL_SESSION,
    fds_to_devnull,
    killed_externally,
    preflight,
)
from pipes_bench.measure import labels_for as _labels
from pipes_bench.report import versions
from pipes_bench.runners import failure_message as _failure_message
from pipes_bench.runners import proc_status_kib as _proc_status_kib
from pipes_bench.runners import raw_pipes_env
from pipes_bench.scenarios import (
    ASSET_NAME,
    IMAGE,
    MESSAGE_PREFIX,
    SCRIPT_NOOP,
    flood_script,
    metadata_blob,
    script_logs,
    script_metadata,
    script_stdout,
)
from pipes_bench.scenarios import analyse as _analyse


def analyse(scenario: str, spec: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """Correctness figures for one run of ``scenario`` ("logs", "metadata", ...)."""
    return _analyse(scenario, spec["params"], out)


__all__ = [
    "ASSET_NAME",
    "IMAGE",
    "LABEL_RUNNER",
    "LABEL_SESSION",
    "MESSAGE_PREFIX",
    "SCRIPT_NOOP",
    "_failure_message",
    "_labels",
    "_proc_status_kib",
    "analyse",
    "fds_to_devnull",
    "flood_script",
    "killed_externally",
    "main",
    "metadata_blob",
    "preflight",
    "raw_pipes_env",
    "script_logs",
    "script_metadata",
    "script_stdout",
    "versions",
]

if __name__ == "__main__":
    sys.exit(main())
