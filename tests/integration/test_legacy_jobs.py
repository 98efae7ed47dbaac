"""A legacy job, unchanged, in an image with no Python: output rules read its lines, and the
files it wrote come back through the Docker API (no mount), with size and checksum."""

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipes_docker import PipesDockerClient, PipesDockerCopyOut, PipesDockerOutputRule

from .conftest import AssetRun

pytestmark = pytest.mark.integration

DASH_IMAGE = "pipes-docker-shell-dash:latest"
SCRIPT = r"""
mkdir -p /out/parts
printf 'id,total\n1,10\n2,32\n' > /out/report.csv
seq 1 5000 > /out/parts/numbers.txt
echo "loading orders"
echo "rows written: 2"
echo "ERROR could not price item 7" >&2
echo "bad rows: 0"
"""
RULES = [
    PipesDockerOutputRule(r"^rows written: (?P<rows>\d+)$", metadata={"rows": "int"}),
    PipesDockerOutputRule(r"^ERROR", log_level="error"),
]


def test_rules_and_files_from_an_unmodified_shell_job(
    make_client: Callable[..., PipesDockerClient],
    run_asset: Callable[..., AssetRun],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    client = make_client(output_rules=RULES)
    run = run_asset(
        client,
        image=DASH_IMAGE,
        command=["sh", "-c", SCRIPT],
        copy_out=PipesDockerCopyOut(["/out/report.csv", "/out/parts"], str(tmp_path / "files")),
    )
    assert run.success, run.error
    metadata = run.metadata
    assert metadata["rows"] == 2
    files: dict[str, Any] = metadata["pipes_docker/files"]
    report = (tmp_path / "files" / "report.csv").read_bytes()
    assert report == b"id,total\n1,10\n2,32\n"
    assert files["/out/report.csv"]["sha256"] == hashlib.sha256(report).hexdigest()
    numbers = (tmp_path / "files" / "parts" / "numbers.txt").read_bytes()
    assert files["/out/parts/numbers.txt"]["size"] == len(numbers) > 20000
    assert "ERROR could not price item 7" in run.log_messages()
    assert "ERROR could not price item 7\n" in capfd.readouterr().err


def test_a_missing_file_is_a_clear_error_and_the_container_is_gone(
    make_client: Callable[..., PipesDockerClient],
    run_asset: Callable[..., AssetRun],
    tmp_path: Path,
) -> None:
    run = run_asset(
        make_client(),
        image=DASH_IMAGE,
        command=["sh", "-c", "true"],
        copy_out=PipesDockerCopyOut(["/out/never-written.csv"], str(tmp_path)),
    )
    assert not run.success
    assert "/out/never-written.csv does not exist" in run.error
