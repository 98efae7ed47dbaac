"""The package's public surface, and what importing it costs a fresh process."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import pipes_docker


def test_every_public_name_is_the_object_its_module_defines() -> None:
    for name in pipes_docker.__all__:
        value = getattr(pipes_docker, name)
        home = importlib.import_module(pipes_docker._HOME_OF[name])
        assert value is getattr(home, name), name
    assert set(pipes_docker.__all__) == set(pipes_docker._HOME_OF)
    assert set(pipes_docker.__all__) <= set(dir(pipes_docker))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'PipesDockerNope'"):
        pipes_docker.PipesDockerNope  # noqa: B018
    with pytest.raises(ImportError, match="PipesDockerNope"):
        from pipes_docker import PipesDockerNope  # noqa: F401


def fresh_imports(statement: str) -> set[str]:
    """The modules a fresh interpreter has loaded after ``statement``."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(done.stdout))


def test_a_step_that_uses_the_client_imports_only_what_its_runs_need() -> None:
    # Dagster runs each step in a fresh process: it should not pay for the Swarm client, the
    # component, the optional features or the retry machinery unless it uses them.
    loaded = fresh_imports("from pipes_docker import PipesDockerClient")

    assert "pipes_docker.client" in loaded
    for unused in (
        "pipes_docker.swarm",
        "pipes_docker.component",
        "pipes_docker.scaffold",
        "pipes_docker.rules",
        "pipes_docker.retrieve",
        "pipes_docker.reporter",
        "tenacity",
    ):
        assert unused not in loaded, unused


def test_importing_the_package_alone_loads_none_of_its_modules() -> None:
    loaded = fresh_imports("import pipes_docker")

    assert {name for name in loaded if name.startswith("pipes_docker.")} == set()
