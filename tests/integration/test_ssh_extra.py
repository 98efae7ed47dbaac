"""``pip install "pipes-docker[ssh]"`` into a clean venv is all an ssh:// engine needs.

The venv is made once per session from a copy of this checkout (so no build files land in it)
with the ``ssh`` extra, and nothing else: paramiko must come from the extra, not from the dev
dependencies. A job then runs on the DinD engine over ssh from that venv's Python.
"""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .engines import SshEngine

ROOT = Path(__file__).parents[2]
PYTHON = shutil.which("python3.11") or sys.executable

JOB = r"""
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.report_asset_materialization(metadata={"greeting": pipes.get_extra("greeting")})
"""

ORCHESTRATOR = r"""
import json, sys
from dagster import AssetExecutionContext, asset, materialize
from pipes_docker import PipesDockerClient

@asset
def over_ssh(context: AssetExecutionContext, docker_pipes: PipesDockerClient):
    return docker_pipes.run(
        context=context,
        image="pipes-docker-testjob:latest",
        command=["python", "-c", sys.argv[1]],
        extras={"greeting": "hello over ssh"},
    ).get_materialize_result()

result = materialize(
    [over_ssh],
    resources={"docker_pipes": PipesDockerClient(container_kwargs={"network_mode": "none"})},
)
(materialization,) = result.asset_materializations_for_node("over_ssh")
print(json.dumps({k: str(v.value) for k, v in materialization.metadata.items()}))
"""


@pytest.fixture(scope="session")
def ssh_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("ssh-venv")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "pipes_docker", source / "pipes_docker", ignore=shutil.ignore_patterns("__pycache__")
    )
    venv = work / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True, env=env, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"{source}[ssh]"],
        check=True,
        env=env,
        timeout=900,
    )
    yield venv


def test_an_ssh_engine_works_from_a_venv_with_only_the_ssh_extra(
    ssh_venv: Path, ssh_engine: SshEngine, tmp_path: Path
) -> None:
    python = str(ssh_venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    installed = subprocess.run(
        [python, "-c", "import pipes_docker, paramiko; print(pipes_docker.__file__)"],
        env=env,
        cwd=tmp_path,  # python -c puts the working dir first on sys.path
        capture_output=True,
        text=True,
        check=True,
    )
    assert installed.stdout.startswith(str(ssh_venv))  # the venv's copy, not this checkout
    script = tmp_path / "orchestrator.py"
    script.write_text(ORCHESTRATOR)

    ran = subprocess.run(
        [python, str(script), JOB],
        env={
            **env,
            "DOCKER_HOST": ssh_engine.address,
            "HOME": str(ssh_engine.home),  # the test key, its ssh config and known_hosts
            "DAGSTER_HOME": "",
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert ran.returncode == 0, ran.stderr[-3000:]
    metadata = json.loads(ran.stdout.strip().splitlines()[-1])
    assert metadata["greeting"] == "hello over ssh"
    assert metadata["pipes_docker/transport"] == "streamed"
    assert metadata["pipes_docker/engine"].startswith("ssh://")
