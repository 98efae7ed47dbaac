"""Vendoring dagster_pipes into a build context: an exact, importable copy and nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster_pipes

from pipes_docker.vendor import installed_dagster_pipes_dir, vendor_dagster_pipes

INSTALLED = Path(dagster_pipes.__file__).parent


def source_files(directory: Path) -> dict[str, bytes]:
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_vendored_copy_matches_the_installed_package_byte_for_byte(tmp_path: Path) -> None:
    target = vendor_dagster_pipes(tmp_path / "context")

    assert target == tmp_path / "context" / "dagster_pipes"
    expected = {
        name: data
        for name, data in source_files(INSTALLED).items()
        if "__pycache__" not in name and not name.endswith(".pyc")
    }
    assert "__init__.py" in expected
    assert source_files(target) == expected


def test_vendored_copy_has_no_bytecode_caches(tmp_path: Path) -> None:
    target = vendor_dagster_pipes(tmp_path)

    assert not list(target.rglob("__pycache__"))
    assert not list(target.rglob("*.pyc"))


def test_vendoring_again_replaces_a_stale_copy(tmp_path: Path) -> None:
    stale = tmp_path / "dagster_pipes"
    stale.mkdir()
    (stale / "__init__.py").write_text("raise ImportError('stale')\n")
    (stale / "leftover.py").write_text("")

    target = vendor_dagster_pipes(tmp_path)

    assert (target / "__init__.py").read_bytes() == (INSTALLED / "__init__.py").read_bytes()
    assert not (target / "leftover.py").exists()


def test_vendored_copy_imports_without_the_installed_package(tmp_path: Path) -> None:
    vendor_dagster_pipes(tmp_path)

    # -S: no site-packages, so only the vendored copy can satisfy the import.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import dagster_pipes;"
        " print(dagster_pipes.__file__); print(dagster_pipes.PIPES_PROTOCOL_VERSION)"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )

    path, version = done.stdout.split()
    assert Path(path) == tmp_path / "dagster_pipes" / "__init__.py"
    assert version == dagster_pipes.PIPES_PROTOCOL_VERSION


def test_installed_dir_is_the_imported_package() -> None:
    assert installed_dagster_pipes_dir() == INSTALLED


def test_command_line_vendors_into_the_destination(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipes_docker", "vendor", str(tmp_path / "build")],
        capture_output=True,
        text=True,
        check=True,
    )

    target = tmp_path / "build" / "dagster_pipes"
    assert (target / "__init__.py").read_bytes() == (INSTALLED / "__init__.py").read_bytes()
    assert str(target) in done.stdout


def test_command_line_without_a_destination_fails_with_usage(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipes_docker", "vendor"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )

    assert done.returncode == 2
    assert "usage:" in done.stderr
    assert list(tmp_path.iterdir()) == []
