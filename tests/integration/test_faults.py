"""Faults on the real engine, on both transports: each one diagnosed, nothing left behind.

The mounted-transport versions of some of these live beside the features they exercise
(test_run.py: self-SIGKILL, OOM; test_lifecycle.py: orchestrator SIGKILL, unreachable engine;
test_pull.py: a pull failing half-way). Here: the same core faults on the streamed transport,
a process killed in the middle of writing a message, and a temp dir on a full filesystem.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from pipes_docker import (
    PipesDockerChannel,
    PipesDockerClient,
    PipesDockerMountedChannel,
    PipesDockerStreamedChannel,
)
from tests.jobs import AssetRun

from .test_lifecycle import containers_of, start_orchestrator, wait_for_started_container

RunAsset = Callable[..., AssetRun]
MakeClient = Callable[..., PipesDockerClient]

TRANSPORTS = ["mounted", "streamed"]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def channel_for(transport: str, temp_root: Path) -> PipesDockerChannel:
    if transport == "streamed":
        return PipesDockerStreamedChannel()
    return PipesDockerMountedChannel(temp_dir_root=str(temp_root))


# Writes the first part of a message exactly where dagster-pipes' writer would, then dies.
KILLED_MID_MESSAGE = r"""
import os, signal, sys
from dagster_pipes import decode_param, open_dagster_pipes
pipes = open_dagster_pipes()
pipes.log.info("message sent before the crash")
half = '{"__dagster_pipes_version": "0.1", "method": "log", "params": {"message": "never fin'
target = decode_param(os.environ["DAGSTER_PIPES_MESSAGES"])
if "path" in target:
    with open(target["path"], "a") as messages:
        messages.write(half)
else:
    sys.stderr.write(half)
    sys.stderr.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_container_sigkilled_mid_message(
    transport: str, make_client: MakeClient, run_asset: RunAsset, pipes_tmp: Path
) -> None:
    client = make_client(channel=channel_for(transport, pipes_tmp))

    run = run_asset(client, KILLED_MID_MESSAGE)

    assert not run.success
    assert "exited with code 137" in run.error
    assert "SIGKILL" in run.error
    messages = run.log_messages()
    assert "message sent before the crash" in messages
    assert not any(m == "never fin" for m in messages)
    half_line = [m for m in messages if "[pipes-docker]" in m and "transport:" not in m]
    assert len(half_line) == 1, messages
    if transport == "mounted":
        assert "ends without a newline" in half_line[0]
    else:
        assert "starts like a Pipes message but is not valid JSON" in half_line[0]


def test_oom_is_named_on_the_streamed_transport(
    make_client: MakeClient, run_asset: RunAsset
) -> None:
    code = """
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.log.info("allocating")
    chunks = []
    while True:
        chunks.append(bytearray(16 * 1024 * 1024))
"""
    client = make_client(
        channel=PipesDockerStreamedChannel(),
        container_kwargs={"mem_limit": "64m", "memswap_limit": "64m"},
    )

    run = run_asset(client, code)

    assert not run.success
    assert "OOM" in run.error
    assert "64.0 MiB" in run.error
    assert "allocating" in run.log_messages()


def test_sigkilled_orchestrator_on_the_streamed_transport_leaves_an_orphan_the_sweep_removes(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    process = start_orchestrator(tmp_path, "sleep", env={"PIPES_DOCKER_TEST_CHANNEL": "streamed"})
    try:
        wait_for_started_container(docker_client, process, tmp_path)
        process.kill()
        process.wait(timeout=30)
    finally:
        process.communicate()
    (orphan,) = containers_of(docker_client, process.pid)

    removed = PipesDockerClient(docker_client=docker_client).remove_orphans()

    assert orphan.id in removed
    assert containers_of(docker_client, process.pid) == []


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB filesystem for the temp dirs; unmounted after the test."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0777", "tmpfs", str(mount_point)],
        check=True,
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def entries(root: Path, keep: str = "") -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name != keep)


def test_a_full_temp_filesystem_fails_before_any_container_and_leaves_nothing(
    docker_client: docker.DockerClient, tiny_tmpfs: Path, run_asset: RunAsset
) -> None:
    filler = tiny_tmpfs / "filler"
    with open(filler, "wb") as file, pytest.raises(OSError):
        file.write(b"\0" * (1 << 20))  # fill it up
    client = PipesDockerClient(
        docker_client=docker_client,
        channel=PipesDockerMountedChannel(temp_dir_root=str(tiny_tmpfs)),
        container_kwargs={"network_mode": "none"},
    )
    created_before = len(docker_client.containers.list(all=True))

    run = run_asset(client, "print('never runs')")

    assert not run.success
    assert "PipesDockerChannelError" in run.error
    assert str(tiny_tmpfs) in run.error
    assert "No space left on device" in run.error
    assert entries(tiny_tmpfs, keep="filler") == []
    assert len(docker_client.containers.list(all=True)) == created_before


def test_a_temp_filesystem_filling_up_mid_run_fails_clearly_and_leaves_nothing(
    docker_client: docker.DockerClient, tiny_tmpfs: Path, run_asset: RunAsset
) -> None:
    code = """
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    for i in range(1000):
        pipes.log.info(f"message {i} " + "x" * 1000)  # 1 MB into a 256 KiB filesystem
"""
    client = PipesDockerClient(
        docker_client=docker_client,
        channel=PipesDockerMountedChannel(temp_dir_root=str(tiny_tmpfs)),
        container_kwargs={"network_mode": "none"},
    )

    run = run_asset(client, code)

    assert not run.success
    assert "exited with code 1" in run.error
    assert "No space left on device" in run.error
    assert "message 0 " + "x" * 1000 in run.log_messages()  # what fitted arrived
    assert entries(tiny_tmpfs) == []
    assert os.statvfs(tiny_tmpfs).f_bfree == os.statvfs(tiny_tmpfs).f_blocks
