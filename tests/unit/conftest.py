"""Fixtures shared by the unit tests: a temp root that must end empty, and client factories."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance

from pipes_docker import PipesDockerClient, PipesDockerMountedChannel

from .fakes import FakeEngine, settle


@pytest.fixture(autouse=True)
def probe_answers_of_this_test(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep the probe's on-disk answers in a dir of this test: none leak in from elsewhere."""
    monkeypatch.setenv("PIPES_DOCKER_CACHE_DIR", str(tmp_path_factory.mktemp("probe-answers")))


@pytest.fixture
def pipes_root(tmp_path: Path) -> Iterator[Path]:
    """Where the client's per-run temp dirs go; it must be empty again after every run."""
    root = tmp_path / "pipes"
    root.mkdir()
    yield root
    settle()  # a run's temp dir is removed in the background
    assert list(root.iterdir()) == [], "the client left temp dirs behind"


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture
def client_for(pipes_root: Path) -> Callable[..., PipesDockerClient]:
    def make(engine: FakeEngine, **kwargs: Any) -> PipesDockerClient:
        kwargs.setdefault(
            "channel", PipesDockerMountedChannel(temp_dir_root=str(pipes_root), poll_interval=0.01)
        )
        return PipesDockerClient(engine=engine, **kwargs)

    return make
