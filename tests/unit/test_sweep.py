"""The orphan sweep beyond containers: the dry run, and the mounted channel's temp dirs."""

import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import orjson

from pipes_docker import PipesDockerClient
from pipes_docker.cleanup import sweep_everything
from pipes_docker.container.backend import ContainerBackend
from pipes_docker.ownership import orchestrator_labels, sweep
from pipes_docker.tempdirs import OWNER_FILE, mark_owner, orphaned_temp_dirs

from .fakes import FakeEngine
from .test_client import dead_pid, leftover

HOURS = timedelta(hours=6)


def run_dir(root: Path, name: str, *, pid: str | None, host: str | None = None) -> Path:
    """A run's temp dir as the mounted channel makes it, owned by ``pid`` (or no owner file)."""
    path = root / name
    (path / "io").mkdir(parents=True)
    if pid is not None:
        labels = {
            **orchestrator_labels(),
            "io.pipes-docker.orchestrator-pid": pid,
            "io.pipes-docker.orchestrator-host": host or socket.gethostname(),
        }
        (path / OWNER_FILE).write_bytes(orjson.dumps(labels))
    return path


def test_a_dead_orchestrators_dir_is_orphaned_once_none_of_its_jobs_is_left(
    tmp_path: Path,
) -> None:
    pid = dead_pid()
    dead = run_dir(tmp_path, "pipes-docker-dead", pid=pid)
    job = {**orchestrator_labels(), "io.pipes-docker.orchestrator-pid": pid}

    assert orphaned_temp_dirs(str(tmp_path), jobs=[job], older_than=HOURS) == []
    assert orphaned_temp_dirs(str(tmp_path), jobs=[], older_than=HOURS) == [str(dead)]


def test_a_live_orchestrators_dir_is_kept_however_old(tmp_path: Path) -> None:
    live = run_dir(tmp_path, "pipes-docker-live", pid=str(os.getpid()))
    old = time.time() - 7 * 24 * 3600
    os.utime(live, (old, old))

    assert orphaned_temp_dirs(str(tmp_path), jobs=[], older_than=HOURS) == []


def test_an_adopter_takes_the_dir_over(tmp_path: Path) -> None:
    adopted = run_dir(tmp_path, "pipes-docker-adopted", pid=dead_pid())

    mark_owner(str(adopted))  # what the mounted channel's reopen does

    assert orphaned_temp_dirs(str(tmp_path), jobs=[], older_than=HOURS) == []


def test_dirs_of_unknown_or_remote_owners_go_by_age_and_other_dirs_are_never_touched(
    tmp_path: Path,
) -> None:
    legacy = run_dir(tmp_path, "pipes-docker-legacy", pid=None)
    remote = run_dir(tmp_path, "pipes-docker-remote", pid="1", host="elsewhere")
    (tmp_path / "pipes-docker-chunk-store").mkdir()  # another tool's dir with our prefix
    (tmp_path / "unrelated" / "io").mkdir(parents=True)

    assert orphaned_temp_dirs(str(tmp_path), jobs=[], older_than=HOURS) == []
    old = time.time() - 7 * 3600
    for path in (legacy, remote):
        os.utime(path, (old, old))
    assert orphaned_temp_dirs(str(tmp_path), jobs=[], older_than=HOURS) == [
        str(legacy),
        str(remote),
    ]


def test_the_dry_run_lists_what_the_sweep_removes_and_removes_nothing(tmp_path: Path) -> None:
    engine = FakeEngine()
    pid = dead_pid()
    orphan = leftover(engine, host=socket.gethostname(), pid=pid, age_hours=0)
    dead = run_dir(tmp_path, "pipes-docker-dead", pid=pid)
    backend = ContainerBackend(engine)

    listed = sweep_everything(
        older_than=HOURS, temp_dir_roots=[str(tmp_path)], dry_run=True, containers=backend
    )

    assert [orphan_.kind for orphan_ in listed] == ["container", "temp dir"]
    assert engine.live_containers() == [orphan]
    assert dead.exists()

    removed = sweep_everything(older_than=HOURS, temp_dir_roots=[str(tmp_path)], containers=backend)

    assert [str(r) for r in removed] == [str(r) for r in listed]
    assert engine.live_containers() == []
    assert not dead.exists()


def test_the_shared_sweeps_dry_run_keeps_the_containers() -> None:
    engine = FakeEngine()
    orphan = leftover(engine, host=socket.gethostname(), pid=dead_pid(), age_hours=0)

    assert sweep(ContainerBackend(engine), older_than=HOURS, dry_run=True) == [orphan]
    assert engine.live_containers() == [orphan]
    assert PipesDockerClient(engine=engine).remove_orphans() == [orphan]
    assert engine.live_containers() == []
