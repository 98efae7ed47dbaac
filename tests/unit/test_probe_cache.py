"""The bind-mount probe's answers outlive the process: Dagster starts one per step.

Each test starts from an empty answer dir (the autouse fixture in conftest) and plays "a new
process" by dropping the in-memory answers with ``forget_probes()``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from pipes_docker import PipesDockerAutoChannel, PipesDockerChannelError, PipesDockerClient
from pipes_docker.channels.probe import forget_probes
from pipes_docker.channels.probe_cache import (
    CachedAnswer,
    ProbeCache,
    ProbeKey,
    default_cache_dir,
)
from tests.jobs import metadata_of as materialization_metadata

from .fakes import FakeEngine
from .test_client import pipes_job, run_asset

MakeClient = Callable[..., PipesDockerClient]


def auto(root: Path) -> PipesDockerAutoChannel:
    return PipesDockerAutoChannel(temp_dir_root=str(root))


def in_a_new_process() -> None:
    forget_probes()


def answer_files() -> list[str]:
    directory = default_cache_dir()
    assert directory is not None
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def key_for(engine: FakeEngine, root: Path) -> ProbeKey:
    real = os.path.realpath(root)
    return ProbeKey(engine.address, real, real)


def test_a_new_process_reuses_the_answer_instead_of_probing(
    client_for: MakeClient, pipes_root: Path
) -> None:
    engine = FakeEngine(pipes_job())

    assert run_asset(client_for(engine, channel=auto(pipes_root))).success
    in_a_new_process()
    result = run_asset(client_for(engine, channel=auto(pipes_root)))

    assert engine.probes == 1
    assert materialization_metadata(result)["pipes_docker/transport"] == "mounted"
    assert len(answer_files()) == 1


def test_a_remote_engine_stays_streamed_in_a_new_process(
    client_for: MakeClient, pipes_root: Path
) -> None:
    engine = FakeEngine(pipes_job(), shares_filesystem=False)

    run_asset(client_for(engine, channel=auto(pipes_root)))
    in_a_new_process()
    result = run_asset(client_for(engine, channel=auto(pipes_root)))

    assert engine.probes == 1
    assert materialization_metadata(result)["pipes_docker/transport"] == "streamed"


def test_another_engine_or_temp_root_is_probed_afresh(
    client_for: MakeClient, pipes_root: Path, tmp_path: Path
) -> None:
    first, second = FakeEngine(pipes_job()), FakeEngine(pipes_job(), shares_filesystem=False)
    other_root = tmp_path / "other-root"
    other_root.mkdir()

    run_asset(client_for(first, channel=auto(pipes_root)))
    in_a_new_process()
    remote = run_asset(client_for(second, channel=auto(pipes_root)))
    in_a_new_process()
    run_asset(client_for(first, channel=auto(other_root)))

    assert materialization_metadata(remote)["pipes_docker/transport"] == "streamed"
    assert (first.probes, second.probes) == (2, 1)
    assert list(other_root.iterdir()) == []


def test_a_temp_root_made_anew_at_the_same_path_is_probed_afresh(tmp_path: Path) -> None:
    # A container's own /tmp and the host's have the same path but are different dirs.
    root = tmp_path / "root"
    root.mkdir()
    cache = ProbeCache(str(tmp_path / "answers"))
    key = ProbeKey("unix:///var/run/docker.sock", str(root), str(root))
    cache.store(key, CachedAnswer(True, "seen"))
    assert cache.load(key) == CachedAnswer(True, "seen")

    root.rmdir()
    (tmp_path / "placeholder").mkdir()  # keeps the old inode number from being handed back
    root.mkdir()

    assert cache.load(key) is None


def test_an_answer_expires(tmp_path: Path) -> None:
    now = [1_000_000.0]
    cache = ProbeCache(str(tmp_path / "answers"), ttl_seconds=60, clock=lambda: now[0])
    key = ProbeKey("tcp://engine:2375", str(tmp_path), str(tmp_path))
    cache.store(key, CachedAnswer(False, "remote"))

    now[0] += 59
    assert cache.load(key) == CachedAnswer(False, "remote")
    now[0] += 2
    assert cache.load(key) is None


def test_a_wrong_shared_answer_fails_before_anything_runs_and_is_forgotten(
    client_for: MakeClient, pipes_root: Path
) -> None:
    # Remembered from an engine that shared our files; the one at that address now does not.
    engine = FakeEngine(pipes_job(), shares_filesystem=False)
    ProbeCache(default_cache_dir()).store(key_for(engine, pipes_root), CachedAnswer(True, "old"))

    with pytest.raises(PipesDockerChannelError) as raised:
        run_asset(client_for(engine, channel=auto(pipes_root)))

    assert "no longer sees this process's temp dir" in str(raised.value)
    assert "Nothing ran" in str(raised.value)
    assert engine.containers == {}
    assert answer_files() == []

    in_a_new_process()
    result = run_asset(client_for(engine, channel=auto(pipes_root)))

    assert engine.probes == 1
    assert materialization_metadata(result)["pipes_docker/transport"] == "streamed"


def test_a_corrupt_or_foreign_answer_file_is_a_miss_and_gets_replaced(
    client_for: MakeClient, pipes_root: Path
) -> None:
    engine = FakeEngine(pipes_job())
    run_asset(client_for(engine, channel=auto(pipes_root)))
    directory = default_cache_dir()
    assert directory is not None
    [name] = answer_files()
    Path(directory, name).write_bytes(b'{"key": {"engine_address": "elsewhere"}, "shared": false')

    in_a_new_process()
    result = run_asset(client_for(engine, channel=auto(pipes_root)))

    assert engine.probes == 2
    assert materialization_metadata(result)["pipes_docker/transport"] == "mounted"
    assert answer_files() == [name]


def test_concurrent_writers_leave_one_whole_answer_and_no_temp_files(tmp_path: Path) -> None:
    cache = ProbeCache(str(tmp_path / "answers"))
    key = ProbeKey("unix:///var/run/docker.sock", str(tmp_path), str(tmp_path))
    seen: list[CachedAnswer | None] = []

    def write_and_read() -> None:
        for _ in range(50):
            cache.store(key, CachedAnswer(True, "x" * 2000))
            seen.append(cache.load(key))

    threads = [threading.Thread(target=write_and_read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert seen == [CachedAnswer(True, "x" * 2000)] * 400
    assert len(os.listdir(tmp_path / "answers")) == 1


def test_a_cache_dir_others_can_write_to_is_not_used(tmp_path: Path) -> None:
    directory = tmp_path / "answers"
    directory.mkdir(mode=0o777)
    directory.chmod(0o777)
    cache = ProbeCache(str(directory))
    key = ProbeKey("unix:///var/run/docker.sock", str(tmp_path), str(tmp_path))

    cache.store(key, CachedAnswer(True, "seen"))

    assert list(directory.iterdir()) == []
    assert cache.load(key) is None


def test_the_cache_dir_is_private(tmp_path: Path) -> None:
    directory = tmp_path / "answers"
    cache = ProbeCache(str(directory))
    key = ProbeKey("unix:///var/run/docker.sock", str(tmp_path), str(tmp_path))

    cache.store(key, CachedAnswer(True, "seen"))

    assert directory.stat().st_mode & 0o777 == 0o700
    [answer] = directory.iterdir()
    assert answer.stat().st_mode & 0o077 == 0


def test_without_a_home_dir_nothing_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPES_DOCKER_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", "")
    monkeypatch.setattr(os.path, "expanduser", lambda path: path)

    assert default_cache_dir() is None
    key = ProbeKey("unix:///var/run/docker.sock", "/tmp", "/tmp")
    ProbeCache(None).store(key, CachedAnswer(True, "seen"))
    assert ProbeCache(None).load(key) is None
