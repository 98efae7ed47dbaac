"""Copy the installed ``dagster_pipes`` module into a Docker build context.

Images that run Pipes jobs need dagster-pipes inside them. Vendoring copies the exact version the
orchestrator runs (a pure-Python package with no dependencies) at build time, so the image and
the orchestrator speak the same protocol version and nothing is committed to the repository.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

__all__ = ["installed_dagster_pipes_dir", "package_files", "vendor_dagster_pipes"]

PACKAGE = "dagster_pipes"


def installed_dagster_pipes_dir() -> Path:
    """The directory of the ``dagster_pipes`` package this interpreter imports."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError("dagster-pipes is not installed in this environment")
    return Path(spec.origin).parent


def package_files(package: Path) -> list[Path]:
    """The package's source files: modules and ``py.typed``, no bytecode caches."""
    return [
        entry
        for entry in sorted(package.iterdir())
        if entry.is_file() and (entry.suffix == ".py" or entry.name == "py.typed")
    ]


def vendor_dagster_pipes(destination: str | os.PathLike[str]) -> Path:
    """Write the installed ``dagster_pipes`` package to ``destination/dagster_pipes``.

    Only the package's source files are copied (no bytecode caches). An existing copy there is
    replaced. Put ``destination`` on the image's ``PYTHONPATH`` to make ``import dagster_pipes``
    work.

    Returns:
        The path of the vendored package.
    """
    source = installed_dagster_pipes_dir()
    target = Path(destination) / PACKAGE
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for entry in package_files(source):
        shutil.copy2(entry, target / entry.name)
    return target
