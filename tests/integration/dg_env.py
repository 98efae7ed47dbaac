"""A clean venv with ``pip install pipes-docker create-dagster dagster-dg-cli``, as a new user has.

Built once and kept under the temp dir, keyed by pyproject.toml and the dagster version (what
decides the dependencies); this checkout's package is reinstalled into it on every session,
from a copy of its sources (so no build/ dir lands in the checkout). Nothing of the dev venv
leaks in: the venv is made from the base interpreter, without system site-packages.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import dagster

ROOT = Path(__file__).resolve().parents[2]
PIP_TIMEOUT = 900


@dataclass(frozen=True)
class DgEnv:
    """The venv, and the environment its commands run with."""

    venv: Path
    env: dict[str, str]

    def run(
        self, *args: str, cwd: Path, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            list(args),
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                f"{done.stderr[-5000:]}"
            )
        return done


def _key() -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(dagster.__version__.encode())
    return digest.hexdigest()[:12]


def _pip(venv: Path, *args: str) -> None:
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *args],
        check=True,
        timeout=PIP_TIMEOUT,
        capture_output=True,
        text=True,
    )


def _base_python() -> str:
    return str(Path(getattr(sys, "_base_executable", sys.executable)))


def _package_copy(into: Path) -> Path:
    copy = into / "pipes-docker"
    copy.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, copy / name)
    shutil.copytree(
        ROOT / "pipes_docker", copy / "pipes_docker", ignore=shutil.ignore_patterns("__pycache__")
    )
    return copy


def dg_env(home: Path) -> DgEnv:
    """The cached venv (made when missing), with this checkout's package freshly installed.

    ``home`` becomes DAGSTER_HOME: the runs' instance lives there.
    """
    version = dagster.__version__
    venv = Path(tempfile.gettempdir()) / f"pipes-docker-dg-venv-{_key()}"
    with tempfile.TemporaryDirectory() as work:
        package = str(_package_copy(Path(work)))
        if not (venv / ".ready").exists():
            # Venv scripts hold their venv's absolute path: it is built where it is used, and
            # marked ready only once complete (a half-built one is made again).
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True, timeout=120)
            # pip install pipes-docker create-dagster dagster-dg-cli (the README's first line),
            # at this dagster's version.
            _pip(
                venv,
                package,
                f"dagster=={version}",
                f"create-dagster=={version}",
                f"dagster-dg-cli=={version}",
            )
            (venv / ".ready").write_text(version)
        else:
            _pip(venv, "--no-deps", "--force-reinstall", package)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        DAGSTER_HOME=str(home),
        NO_COLOR="1",
        COLUMNS="200",
    )
    return DgEnv(venv=venv, env=env)
