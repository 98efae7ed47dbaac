"""The mounted channel: a private per-run dir the container can write into, gone after the run."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipes_docker.channels import OpenChannel, PipesDockerMountedChannel

from .fakes import FakeEngine, settle


@pytest.fixture(autouse=True)
def strict_umask() -> Iterator[None]:
    """A umask that would strip every group/other bit: modes must be set explicitly."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def root_of(opened: OpenChannel) -> Path:
    return Path(opened.mounts[0].host_path).parent


class NullHandler:
    def handle_message(self, message: Any) -> None:
        pass

    def report_pipes_framework_exception(self, origin: str, exc_info: Any) -> None:
        pass


IMAGE = "job:1"
CONTEXT: Any = {"asset_keys": ["a"], "run_id": "r1", "extras": {"k": "v"}}


def test_dirs_and_messages_file_have_explicit_modes(tmp_path: Path) -> None:
    channel = PipesDockerMountedChannel(temp_dir_root=str(tmp_path))

    with channel.open(engine=FakeEngine(), image=IMAGE, warn=print) as opened:
        io_dir = opened.mounts[0].host_path
        assert mode(root_of(opened)) == 0o700
        assert mode(io_dir) == 0o777
        assert mode(os.path.join(io_dir, "messages")) == 0o666
        assert root_of(opened).parent == tmp_path


def test_context_file_is_world_readable_json(tmp_path: Path) -> None:
    channel = PipesDockerMountedChannel(temp_dir_root=str(tmp_path))

    with (
        channel.open(engine=FakeEngine(), image=IMAGE, warn=print) as opened,
        opened.context_injector.inject_context(CONTEXT),
    ):
        path = os.path.join(opened.mounts[0].host_path, "context.json")
        assert mode(path) == 0o644
        assert orjson.loads(Path(path).read_bytes()) == CONTEXT


def test_mount_is_the_io_dir_at_mount_path(tmp_path: Path) -> None:
    channel = PipesDockerMountedChannel(temp_dir_root=str(tmp_path), mount_path="/pipes/io/")

    with channel.open(engine=FakeEngine(), image=IMAGE, warn=print) as opened:
        [mount] = opened.mounts
        assert mount.container_path == "/pipes/io"
        assert not mount.read_only
        assert Path(mount.host_path).is_dir()


def test_bootstrap_params_point_at_container_paths(tmp_path: Path) -> None:
    channel = PipesDockerMountedChannel(temp_dir_root=str(tmp_path))

    with channel.open(engine=FakeEngine(), image=IMAGE, warn=print) as opened:
        with opened.context_injector.inject_context(CONTEXT) as context_params:
            assert context_params == {"path": "/dagster-pipes/context.json"}
        with opened.message_reader.read_messages(NullHandler()) as message_params:  # type: ignore[arg-type]
            assert message_params == {"path": "/dagster-pipes/messages"}
        assert str(tmp_path) not in str(context_params) + str(message_params)


def test_everything_is_removed_after_the_run(tmp_path: Path) -> None:
    channel = PipesDockerMountedChannel(temp_dir_root=str(tmp_path))

    with channel.open(engine=FakeEngine(), image=IMAGE, warn=print) as opened:
        root = root_of(opened)
        io_dir = Path(opened.mounts[0].host_path)
        with opened.context_injector.inject_context(CONTEXT):
            pass
        # What a container might leave behind: nested dirs and read-only files.
        (io_dir / "out" / "deep").mkdir(parents=True)
        (io_dir / "out" / "deep" / "result.bin").write_bytes(b"x")
        os.chmod(io_dir / "out" / "deep" / "result.bin", 0o400)

    settle()  # the temp dir is removed in the background
    assert not root.exists()
    assert list(tmp_path.iterdir()) == []


def test_everything_is_removed_when_the_run_fails(tmp_path: Path) -> None:
    channel = PipesDockerMountedChannel(temp_dir_root=str(tmp_path))

    with (
        pytest.raises(RuntimeError, match="boom"),
        channel.open(engine=FakeEngine(), image=IMAGE, warn=print) as opened,
    ):
        root = root_of(opened)
        raise RuntimeError("boom")

    settle()  # the temp dir is removed in the background
    assert not root.exists()
    assert list(tmp_path.iterdir()) == []


def test_concurrent_runs_get_separate_dirs(tmp_path: Path) -> None:
    channel = PipesDockerMountedChannel(temp_dir_root=str(tmp_path))

    with (
        channel.open(engine=FakeEngine(), image=IMAGE, warn=print) as first,
        channel.open(engine=FakeEngine(), image=IMAGE, warn=print) as second,
    ):
        assert first.mounts[0].host_path != second.mounts[0].host_path

    settle()
    assert list(tmp_path.iterdir()) == []


def test_relative_mount_path_is_rejected() -> None:
    with pytest.raises(ValueError, match="absolute"):
        PipesDockerMountedChannel(mount_path="dagster-pipes")


def test_injector_debug_text_names_both_paths(tmp_path: Path) -> None:
    channel = PipesDockerMountedChannel(temp_dir_root=str(tmp_path))

    with channel.open(engine=FakeEngine(), image=IMAGE, warn=print) as opened:
        text = opened.context_injector.no_messages_debug_text()
        assert opened.mounts[0].host_path in text
        assert "/dagster-pipes/context.json" in text
