"""A Pipes job in a real container, end to end: what arrives, where it lands, what is left."""

from __future__ import annotations

import os
import re
import string
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from dagster import DagsterInstance, materialize

from pipes_docker import MANAGED_LABEL, PipesDockerClient
from tests.jobs import AssetRun

from .conftest import TEST_IMAGE

RunAsset = Callable[..., AssetRun]
MakeClient = Callable[..., PipesDockerClient]


def test_example_assets_materialize_with_run_metadata(docker_client: docker.DockerClient) -> None:
    from examples.definitions import (
        chunked_report,
        defs,
        legacy_report,
        platform_summary,
        word_counts,
    )

    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [word_counts, legacy_report, platform_summary, chunked_report],
            resources={name: defs.resources[name] for name in ("docker_pipes", "chunked_pipes")},
            instance=instance,
        )
        logs = [entry.user_message for entry in instance.all_logs(result.run_id)]

    def metadata_of(name: str) -> dict[str, Any]:
        (materialization,) = result.asset_materializations_for_node(name)
        return {key: value.value for key, value in materialization.metadata.items()}

    words = metadata_of("word_counts")  # vendored dagster_pipes
    assert words["word_count"] == 16
    assert words["most_common"] == {"the": 4, "fox": 2, "dog": 2}
    assert words["pipes_docker/image"] == "pipes-docker-example:latest"
    image_id = docker_client.images.get("pipes-docker-example:latest").id
    assert words["pipes_docker/image_id"] == image_id
    assert re.fullmatch(r"[0-9a-f]{64}", words["pipes_docker/container_id"])
    assert words["pipes_docker/exit_code"] == 0
    assert 0 < words["pipes_docker/duration_seconds"] < 60

    legacy = metadata_of("legacy_report")  # no Pipes at all: run metadata only
    assert legacy["pipes_docker/exit_code"] == 0
    assert set(legacy) == {k for k in legacy if k.startswith("pipes_docker/")}

    injected = metadata_of("platform_summary")  # dagster_pipes injected at run time
    assert injected["python_version"].startswith("3.")

    chunked = metadata_of("chunked_report")  # the user's own message channel
    assert chunked["rows"] == 1000
    assert chunked["channel"] == "chunk dir"
    assert chunked["pipes_docker/transport"] == "custom"
    assert [f"batch {i} uploaded as a chunk" for i in range(3)] == [
        line for line in logs if line.startswith("batch ")
    ]


def test_the_example_reports_the_same_data_version_for_the_same_input() -> None:
    # Each run's job is a new Python process: a version built on the salted hash() differs
    # between them, and Dagster would then see a change on every materialization.
    from examples.definitions import defs, word_counts

    versions = []
    for _ in range(2):
        with DagsterInstance.ephemeral() as instance:
            result = materialize(
                [word_counts],
                resources={"docker_pipes": defs.resources["docker_pipes"]},
                instance=instance,
            )
            (materialization,) = result.asset_materializations_for_node("word_counts")
            versions.append(materialization.tags["dagster/data_version"])

    assert versions[0] == versions[1]
    assert re.fullmatch(r"[0-9a-f]{16}", versions[0])


@pytest.mark.parametrize("size", [20_000, 100_000, 5_000_000], ids=["20KB", "100KB", "5MB"])
def test_metadata_of_any_size_arrives_intact(
    make_client: MakeClient, run_asset: RunAsset, size: int
) -> None:
    code = f"""
import string
from dagster_pipes import open_dagster_pipes
value = (string.ascii_letters * ({size} // 52 + 1))[:{size}]
with open_dagster_pipes() as pipes:
    pipes.report_asset_materialization(metadata={{"blob": value, "size": len(value)}})
"""
    run = run_asset(make_client(), code)

    assert run.success
    expected = (string.ascii_letters * (size // 52 + 1))[:size]
    assert run.metadata["size"] == size
    assert run.metadata["blob"] == expected


def test_job_running_as_non_root_user_reads_context_and_reports(
    make_client: MakeClient, run_asset: RunAsset
) -> None:
    code = """
import os
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.report_asset_materialization(
        metadata={"uid": os.getuid(), "greeting": pipes.get_extra("greeting")}
    )
"""
    client = make_client(container_kwargs={"user": "1000:1000"})
    run = run_asset(client, code, extras={"greeting": "hello from the orchestrator"})

    assert run.success, run.error
    assert run.metadata["uid"] == 1000
    assert run.metadata["greeting"] == "hello from the orchestrator"


def test_bootstrap_env_wins_over_user_env(make_client: MakeClient, run_asset: RunAsset) -> None:
    code = """
import os
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.report_asset_materialization(metadata={
        "from_client": os.environ["FROM_CLIENT"], "from_run": os.environ["FROM_RUN"],
        "shared": os.environ["SHARED"]})
"""
    client = make_client(env={"FROM_CLIENT": "c", "SHARED": "client"})
    run = run_asset(
        client,
        code,
        env={"FROM_RUN": "r", "SHARED": "run", "DAGSTER_PIPES_CONTEXT": "garbage"},
    )

    assert run.success, run.error
    assert run.metadata["from_client"] == "c"
    assert run.metadata["from_run"] == "r"
    assert run.metadata["shared"] == "run"


def test_stdout_and_stderr_land_on_their_own_streams(
    make_client: MakeClient, run_asset: RunAsset, capsys: pytest.CaptureFixture[str]
) -> None:
    code = r"""
import sys
print("first stdout line, written at once")
print("an stderr line", file=sys.stderr)
sys.stdout.flush()
sys.stdout.buffer.write(b"bad bytes \xff\xfe here\n")
sys.stdout.buffer.write("snowman \u2603 split\n".encode())
sys.stdout.flush()
sys.stdout.write("last line without newline")
"""
    run = run_asset(make_client(), code)

    assert run.success, run.error
    out, err = capsys.readouterr()
    assert "first stdout line, written at once\n" in out
    assert "bad bytes \ufffd\ufffd here\n" in out
    assert "snowman \u2603 split\n" in out
    assert "last line without newline\n" in out
    assert "an stderr line\n" in err
    assert "an stderr line" not in out
    assert "first stdout line" not in err


def test_log_files_keep_each_stream(
    make_client: MakeClient, run_asset: RunAsset, tmp_path: Path
) -> None:
    code = r"""
import sys
for i in range(1000):
    print(f"out {i}")
    print(f"err {i}", file=sys.stderr)
"""
    run = run_asset(make_client(log_dir=str(tmp_path / "logs"), forward_stdio=False), code)

    assert run.success, run.error
    stdout_log = Path(run.metadata["pipes_docker/stdout_log"])
    stderr_log = Path(run.metadata["pipes_docker/stderr_log"])
    assert stdout_log.read_text() == "".join(f"out {i}\n" for i in range(1000))
    assert stderr_log.read_text() == "".join(f"err {i}\n" for i in range(1000))


def test_nonzero_exit_names_image_container_code_and_stderr_tail(
    make_client: MakeClient, run_asset: RunAsset
) -> None:
    code = """
import sys
for i in range(30):
    print(f"stderr line {i:02d}", file=sys.stderr)
print("a stdout line")
sys.exit(3)
"""
    run = run_asset(make_client(), code, env={"API_TOKEN": "s3cr3t-value"})

    assert not run.success
    error = run.error
    assert "exited with code 3" in error
    assert TEST_IMAGE in error
    assert re.search(r"Container [0-9a-f]{12} ", error)
    assert "stderr line 29" in error
    assert "stderr line 10" in error
    # The message quotes the last 20 lines; a note under it carries all the stderr kept.
    assert "The stderr kept (30 lines" in error
    assert "stderr line 00" in error
    assert "s3cr3t-value" not in error


def test_container_killing_itself_delivers_earlier_messages_and_says_so(
    make_client: MakeClient, run_asset: RunAsset
) -> None:
    code = """
import os, signal
from dagster_pipes import open_dagster_pipes
pipes = open_dagster_pipes()
pipes.log.info("message sent before the crash")
os.kill(os.getpid(), signal.SIGKILL)
"""
    run = run_asset(make_client(), code)

    assert not run.success
    assert "exited with code 137" in run.error
    assert "SIGKILL" in run.error
    assert "message sent before the crash" in run.log_messages()


def test_malformed_line_between_good_messages_is_reported_and_skipped(
    make_client: MakeClient, run_asset: RunAsset
) -> None:
    code = """
import os
from dagster_pipes import open_dagster_pipes, decode_param
with open_dagster_pipes() as pipes:
    pipes.log.info("before the bad line")
    path = decode_param(os.environ["DAGSTER_PIPES_MESSAGES"])["path"]
    with open(path, "a") as f:
        f.write("{this is not json\\n")
    pipes.log.info("after the bad line")
    pipes.report_asset_materialization(metadata={"reported": "after the bad line"})
"""
    run = run_asset(make_client(), code)

    assert run.success, run.error
    assert run.metadata["reported"] == "after the bad line"
    logs = run.log_messages()
    assert "before the bad line" in logs
    assert "after the bad line" in logs
    assert any("not valid JSON" in line for line in logs)


@pytest.mark.parametrize("init", [True, False], ids=["docker-init", "no-init"])
def test_command_that_cannot_start_fails_clearly_and_leaves_nothing(
    make_client: MakeClient, run_asset: RunAsset, init: bool
) -> None:
    # With docker-init the exec fails inside a running container (exit 127, reason on stderr);
    # without it the engine's start call fails. Both must name the program and the image.
    client = make_client(container_kwargs={"init": init})
    run = run_asset(client, command=["/no/such/program"])

    assert not run.success
    assert "/no/such/program" in run.error
    assert TEST_IMAGE in run.error
    # no_containers_left and pipes_tmp check the rest.


def test_missing_image_with_pull_policy_never_names_the_image(
    make_client: MakeClient, run_asset: RunAsset
) -> None:
    run = run_asset(
        make_client(pull_policy="never"), image="pipes-docker-no-such-image:1", command=["true"]
    )

    assert not run.success
    assert "pipes-docker-no-such-image:1" in run.error
    assert "pull_policy" in run.error


def test_containers_carry_labels_naming_dagster_run_and_step(
    make_client: MakeClient, run_asset: RunAsset, docker_client: docker.DockerClient
) -> None:
    seen: list[dict[str, Any]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set() and not seen:
            for container in docker_client.containers.list(
                filters={"label": f"{MANAGED_LABEL}=true"}, ignore_removed=True
            ):
                seen.append(
                    {
                        **container.labels,
                        "log driver": container.attrs["HostConfig"]["LogConfig"]["Type"],
                    }
                )
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        run = run_asset(make_client(), "import time; time.sleep(2)")
    finally:
        stop.set()
        watcher.join()

    assert run.success, run.error
    assert seen, "the container was never seen running"
    labels = seen[0]
    assert labels["io.pipes-docker.dagster-run-id"] == run.result.run_id
    assert labels["io.pipes-docker.dagster-step-key"] == "job"
    # Output is captured from the attach stream; the engine need not write it to disk again.
    assert labels["log driver"] == "none"


def test_container_removed_by_someone_else_says_so(
    make_client: MakeClient, run_asset: RunAsset, docker_client: docker.DockerClient
) -> None:
    def remove_when_running() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            running = docker_client.containers.list(
                filters={"label": f"{MANAGED_LABEL}=true"}, ignore_removed=True
            )
            for container in running:
                if container.labels.get("io.pipes-docker.orchestrator-pid") == str(os.getpid()):
                    container.remove(force=True)
                    return
            time.sleep(0.05)

    remover = threading.Thread(target=remove_when_running)
    remover.start()
    try:
        run = run_asset(make_client(), "import time; time.sleep(30)")
    finally:
        remover.join()

    assert not run.success
    assert "removed by someone else" in run.error


def test_oom_killed_container_says_so_with_its_limit(
    make_client: MakeClient, run_asset: RunAsset
) -> None:
    code = """
chunks = []
while True:
    chunks.append(bytearray(16 * 1024 * 1024))
"""
    client = make_client(container_kwargs={"mem_limit": "64m", "memswap_limit": "64m"})
    run = run_asset(client, code)

    assert not run.success
    assert "OOM" in run.error
    assert "64.0 MiB" in run.error


def test_timeout_stops_the_container_and_says_after_how_long(
    make_client: MakeClient, run_asset: RunAsset
) -> None:
    started = time.monotonic()
    run = run_asset(make_client(), "import time; time.sleep(120)", timeout_seconds=2)

    assert not run.success
    assert "timed out after 2 seconds" in run.error
    assert time.monotonic() - started < 30


def test_run_metadata_has_the_engines_view_and_the_jobs_resource_use(
    make_client: MakeClient, run_asset: RunAsset
) -> None:
    code = """
import time
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    ballast = bytearray(64 * 1024 * 1024)  # 64 MiB held while the engine samples
    started = time.time()
    while time.time() - started < 2.5:  # busy: CPU seconds to count
        pass
    pipes.report_asset_materialization(metadata={"done": True})
"""
    run = run_asset(make_client(), code)

    assert run.success, run.error
    metadata = run.metadata
    assert metadata["pipes_docker/peak_memory_bytes"] >= 64 * 1024 * 1024
    assert (
        1.0 <= metadata["pipes_docker/cpu_seconds"] <= metadata["pipes_docker/duration_seconds"] + 1
    )
    assert metadata["pipes_docker/started_at"] < metadata["pipes_docker/finished_at"]
    assert metadata["pipes_docker/started_at"].startswith("20")
    assert metadata["pipes_docker/engine"].startswith(("unix://", "tcp://", "ssh://"))
    assert "@" not in metadata["pipes_docker/engine"]
    assert "pipes_docker/image_digest" not in metadata  # built here: no registry digest to give
