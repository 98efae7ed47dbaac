"""Which transport a run uses, and that each one delivers: on local, remote and mapped engines.

The fake engine plays a local engine (it sees this process's files), a remote one (it sees none
of them) or the host's engine seen from an orchestrator container (it names our temp root by
another path). The same Pipes job runs on each.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, PipesFileContextInjector, PipesFileMessageReader
from dagster_pipes import decode_param

from pipes_docker import (
    PipesDockerAutoChannel,
    PipesDockerChannelError,
    PipesDockerClient,
    PipesDockerContainerError,
    PipesDockerMountedChannel,
    PipesDockerStreamedChannel,
)
from pipes_docker.container.engine import ContainerSpec
from pipes_docker.ownership import PID_LABEL, PROBE_LABEL, orchestrator_labels
from tests.jobs import metadata_of

from .fakes import FakeContainer, FakeEngine
from .test_client import pipes_context, pipes_job, run_asset, send

MakeClient = Callable[..., PipesDockerClient]

# dagster's own file reader inherits a property that dagster itself flags as a preview API.
dagsters_preview_warning = pytest.mark.filterwarnings(
    "ignore:Function `PipesMessageReader.expected_writer_count`"
)


def auto(pipes_root: Path, **kwargs: Any) -> PipesDockerAutoChannel:
    return PipesDockerAutoChannel(temp_dir_root=str(pipes_root), **kwargs)


def test_a_local_engine_gets_the_mounted_transport(
    client_for: MakeClient, pipes_root: Path
) -> None:
    engine = FakeEngine(pipes_job(metadata={"rows": 3}))

    result = run_asset(client_for(engine, channel=auto(pipes_root)))

    metadata = metadata_of(result)
    assert metadata["rows"] == 3
    assert metadata["pipes_docker/transport"] == "mounted"
    assert [m.container_path for m in engine.only.spec.mounts] == ["/dagster-pipes"]


def test_a_remote_engine_gets_the_streamed_transport_with_no_mounts(
    client_for: MakeClient, pipes_root: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    engine = FakeEngine(
        pipes_job(metadata={"rows": 3}, stdout=["out line"], stderr=["err line"]),
        shares_filesystem=False,
    )

    result = run_asset(client_for(engine, channel=auto(pipes_root)))

    metadata = metadata_of(result)
    assert metadata["rows"] == 3
    assert metadata["pipes_docker/transport"] == "streamed"
    assert engine.only.spec.mounts == []
    assert decode_param(engine.only.env["DAGSTER_PIPES_MESSAGES"]) == {"stdio": "stderr"}
    out, err = capfd.readouterr()
    assert "out line\n" in out
    assert "err line\n" in err
    assert "__dagster_pipes_version" not in out + err  # messages are not output


def test_the_probe_runs_once_per_engine_not_per_run(
    client_for: MakeClient, pipes_root: Path
) -> None:
    remote = FakeEngine(pipes_job(), shares_filesystem=False)
    client = client_for(remote, channel=auto(pipes_root))

    for _ in range(3):
        assert run_asset(client).success

    assert remote.probes == 1
    assert len(remote.containers) == 3


def test_the_probe_container_is_labelled_as_this_orchestrator_s_for_the_sweep(
    client_for: MakeClient, pipes_root: Path
) -> None:
    engine = FakeEngine(pipes_job(), shares_filesystem=False)

    assert run_asset(client_for(engine, channel=auto(pipes_root))).success

    (labels,) = engine.probe_labels
    assert labels == {**orchestrator_labels(), PROBE_LABEL: "true"}
    assert labels[PID_LABEL] == str(os.getpid())


def test_the_transport_is_logged_at_debug_level(
    client_for: MakeClient, pipes_root: Path, instance: DagsterInstance
) -> None:
    engine = FakeEngine(pipes_job(), shares_filesystem=False)

    result = run_asset(client_for(engine, channel=auto(pipes_root)), instance=instance)

    notes = [
        entry
        for entry in instance.all_logs(result.run_id)
        if "[pipes-docker] transport:" in entry.user_message
    ]
    assert [entry.level for entry in notes] == [10]
    assert "transport: streamed" in notes[0].user_message
    assert engine.address in notes[0].user_message


def test_a_small_context_travels_inline_and_nothing_is_copied(client_for: MakeClient) -> None:
    engine = FakeEngine(pipes_job(), shares_filesystem=False)

    run_asset(client_for(engine, channel=PipesDockerStreamedChannel()), extras={"k": "v"})

    params = decode_param(engine.only.env["DAGSTER_PIPES_CONTEXT"])
    assert params["data"]["extras"] == {"k": "v"}
    assert "copy_files" not in engine.ops()


def test_a_1mb_incompressible_context_is_copied_in_before_start(client_for: MakeClient) -> None:
    blob = secrets.token_hex(500_000)  # 1 MB that zlib cannot shrink much
    seen: dict[str, Any] = {}

    def record(box: FakeContainer) -> None:
        seen["blob"] = pipes_context(box)["extras"]["blob"]

    engine = FakeEngine(pipes_job(before=record), shares_filesystem=False)

    result = run_asset(
        client_for(engine, channel=PipesDockerStreamedChannel()), extras={"blob": blob}
    )

    assert result.success
    assert seen["blob"] == blob
    assert decode_param(engine.only.env["DAGSTER_PIPES_CONTEXT"]) == {
        "path": "/dagster-pipes/context.json"
    }
    ops = engine.ops()
    assert ops.index("create") < ops.index("copy_files") < ops.index("start")
    assert len(engine.only.env["DAGSTER_PIPES_CONTEXT"]) < 1000


def test_streamed_error_quotes_user_stderr_not_messages(client_for: MakeClient) -> None:
    def failing(spec: ContainerSpec, box: FakeContainer) -> int:
        send(box, ("opened", {"extras": {}}), ("log", {"message": "a log", "level": "INFO"}))
        box.stderr("Traceback (most recent call last):\nValueError: bad row 7\n")
        return 3

    engine = FakeEngine(failing, shares_filesystem=False)

    with pytest.raises(PipesDockerContainerError) as raised:
        run_asset(client_for(engine, channel=PipesDockerStreamedChannel()))

    text = str(raised.value)
    assert "exited with code 3" in text
    assert "ValueError: bad row 7" in text
    assert "__dagster_pipes_version" not in text


def test_an_explicit_mounted_channel_on_a_remote_engine_fails_before_any_container(
    client_for: MakeClient, pipes_root: Path
) -> None:
    engine = FakeEngine(pipes_job(), shares_filesystem=False)
    channel = PipesDockerMountedChannel(temp_dir_root=str(pipes_root))

    with pytest.raises(PipesDockerChannelError) as raised:
        run_asset(client_for(engine, channel=channel))

    assert "does not see this process's temp dir" in str(raised.value)
    assert engine.address in str(raised.value)
    assert "create" not in engine.ops()


def test_a_mapped_temp_root_uses_the_mounted_transport_with_host_paths(
    client_for: MakeClient, pipes_root: Path
) -> None:
    engine = FakeEngine(pipes_job(metadata={"ok": True}), host_root=("/srv/pipes", str(pipes_root)))
    channel = auto(pipes_root, host_temp_dir_root="/srv/pipes")

    result = run_asset(client_for(engine, channel=channel))

    metadata = metadata_of(result)
    assert metadata["ok"] is True
    assert metadata["pipes_docker/transport"] == "mounted"
    [mount] = engine.only.spec.mounts
    assert mount.host_path.startswith("/srv/pipes/pipes-docker-")


def test_a_wrong_mapping_is_reported_by_the_probe_not_inside_the_job(
    client_for: MakeClient, pipes_root: Path
) -> None:
    engine = FakeEngine(pipes_job(), host_root=("/srv/pipes", str(pipes_root)))
    channel = auto(pipes_root, host_temp_dir_root="/srv/elsewhere")

    with pytest.raises(PipesDockerChannelError) as raised:
        run_asset(client_for(engine, channel=channel))

    text = str(raised.value)
    assert "host_temp_dir_root='/srv/elsewhere' does not back" in text
    assert str(pipes_root) in text
    assert "create" not in engine.ops()


@dagsters_preview_warning
def test_dagsters_own_file_injector_and_reader_on_a_user_volume(
    tmp_path: Path, pipes_root: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    context_path, messages_path = str(volume / "context.json"), str(volume / "messages.jsonl")
    engine = FakeEngine(
        pipes_job(metadata={"via": "user channel"}, stderr=["job stderr"]), shares_filesystem=False
    )
    client = PipesDockerClient(
        engine=engine,
        context_injector=PipesFileContextInjector(context_path),
        message_reader=PipesFileMessageReader(messages_path),
        # The same path on both sides, as dagster's file injector and reader need.
        container_kwargs={"volumes": {str(volume): {"bind": str(volume), "mode": "rw"}}},
    )

    result = run_asset(client)

    metadata = metadata_of(result)
    assert metadata["via"] == "user channel"
    assert metadata["pipes_docker/transport"] == "custom"
    assert "job stderr\n" in capfd.readouterr().err
    assert engine.probes == 0


@dagsters_preview_warning
def test_a_user_reader_alone_gets_the_streamed_context(tmp_path: Path) -> None:
    messages_path = str(tmp_path / "messages.jsonl")
    engine = FakeEngine(pipes_job(metadata={"n": 1}), shares_filesystem=False)
    client = PipesDockerClient(
        engine=engine,
        message_reader=PipesFileMessageReader(messages_path),
        container_kwargs={"volumes": [f"{tmp_path}:{tmp_path}"]},
    )

    result = run_asset(client, extras={"k": "v"})

    assert metadata_of(result)["n"] == 1
    assert "data" in decode_param(engine.only.env["DAGSTER_PIPES_CONTEXT"])
    assert decode_param(engine.only.env["DAGSTER_PIPES_MESSAGES"])["path"] == messages_path


def test_channel_and_custom_parts_together_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        PipesDockerClient(
            engine=FakeEngine(),
            channel=PipesDockerStreamedChannel(),
            message_reader=PipesFileMessageReader(str(tmp_path / "m")),
        )


def test_streamed_transport_with_a_tty_still_finds_messages(client_for: MakeClient) -> None:
    engine = FakeEngine(
        pipes_job(metadata={"tty": "yes"}, stdout=["on the tty"]), shares_filesystem=False
    )

    result = run_asset(
        client_for(engine, channel=PipesDockerStreamedChannel()), container_kwargs={"tty": True}
    )

    assert metadata_of(result)["tty"] == "yes"


def test_the_probe_says_in_plain_words_why_an_engine_does_not_share_our_files(
    tmp_path: Path,
) -> None:
    from pipes_docker.channels.probe import probe_shared_dir

    remote = probe_shared_dir(FakeEngine(shares_filesystem=False), "img", str(tmp_path), "/srv")
    same = probe_shared_dir(
        FakeEngine(shares_filesystem=False), "img", str(tmp_path), str(tmp_path)
    )

    assert not remote.shared and not same.shared
    assert "does not share our files" in remote.reason
    assert "which the engine should see as /srv/pipes-docker-probe-" in remote.reason
    assert "this process made does not exist there" in same.reason
