"""Legacy jobs, injected and vendored dagster-pipes, and the whole Pipes protocol, end to end."""

import io
import logging
import tarfile
from collections.abc import Callable, Iterator

import dagster_pipes.version
import docker
import pytest
from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    DagsterInstance,
    MaterializeResult,
    StaticPartitionsDefinition,
    asset,
    materialize,
    multi_asset,
)

from pipes_docker import PipesDockerClient
from tests.jobs import AssetRun

from .conftest import BASE_IMAGE, TEST_IMAGE

RunAsset = Callable[..., AssetRun]
MakeClient = Callable[..., PipesDockerClient]

NO_MESSAGES = "did not receive any messages"
ORCHESTRATOR_PIPES_VERSION = dagster_pipes.version.__version__
INJECT_PATH = "/opt/pipes-docker/inject"

REPORT_PIPES_ORIGIN = """
import os, dagster_pipes, dagster_pipes.version
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.report_asset_materialization(metadata={
        "pipes_version": dagster_pipes.version.__version__,
        "pipes_file": dagster_pipes.__file__,
        "pythonpath": os.environ.get("PYTHONPATH", ""),
    })
"""


def log_entries(run: AssetRun) -> list[tuple[int, str]]:
    return [
        (entry.level, entry.user_message)
        for entry in run.instance.all_logs(run.result.run_id)
        if entry.dagster_event is None
    ]


# --- legacy jobs ---------------------------------------------------------------------------


def test_legacy_shell_job_succeeds_with_run_metadata_and_no_warning(
    make_client: MakeClient, run_asset: RunAsset, capsys: pytest.CaptureFixture[str]
) -> None:
    script = "echo 'processing 3 files'; echo 'one file was empty' >&2; exit 0"
    run = run_asset(make_client(), image=BASE_IMAGE, command=["sh", "-c", script])

    assert run.success, run.error
    assert run.metadata["pipes_docker/exit_code"] == 0
    assert run.metadata["pipes_docker/image"] == BASE_IMAGE
    out, err = capsys.readouterr()
    assert "processing 3 files\n" in out
    assert "one file was empty\n" in err
    about_no_messages = [(lvl, msg) for lvl, msg in log_entries(run) if NO_MESSAGES in msg]
    assert len(about_no_messages) == 1
    assert about_no_messages[0][0] == logging.INFO


def test_legacy_python_job_failing_reports_exit_code_and_stderr(
    make_client: MakeClient, run_asset: RunAsset
) -> None:
    code = "import sys; print('input.csv: bad header', file=sys.stderr); sys.exit(4)"
    run = run_asset(make_client(), image=BASE_IMAGE, command=["python3", "-c", code])

    assert not run.success
    assert "exited with code 4" in run.error
    assert "input.csv: bad header" in run.error


# --- injected dagster-pipes ----------------------------------------------------------------


def test_injected_pipes_work_in_an_image_without_dagster_pipes(
    make_client: MakeClient, run_asset: RunAsset
) -> None:
    run = run_asset(
        make_client(),
        image=BASE_IMAGE,
        command=["python3", "-c", REPORT_PIPES_ORIGIN],
        inject_pipes=True,
    )

    assert run.success, run.error
    assert run.metadata["pipes_version"] == ORCHESTRATOR_PIPES_VERSION
    assert run.metadata["pipes_file"].startswith(INJECT_PATH)


def test_without_injection_an_image_lacking_dagster_pipes_fails_with_the_import_error(
    make_client: MakeClient, run_asset: RunAsset
) -> None:
    run = run_asset(make_client(), image=BASE_IMAGE, command=["python3", "-c", REPORT_PIPES_ORIGIN])

    assert not run.success
    assert "No module named 'dagster_pipes'" in run.error


def test_injection_keeps_the_pythonpath_of_the_image_and_of_the_user(
    make_client: MakeClient, run_asset: RunAsset
) -> None:
    # The test image sets PYTHONPATH=/opt/pipes itself.
    from_image = run_asset(make_client(), REPORT_PIPES_ORIGIN, inject_pipes=True)
    from_user = run_asset(
        make_client(), REPORT_PIPES_ORIGIN, inject_pipes=True, env={"PYTHONPATH": "/custom"}
    )

    assert from_image.metadata["pythonpath"] == f"{INJECT_PATH}:/opt/pipes"
    assert from_user.metadata["pythonpath"] == f"{INJECT_PATH}:/custom"


@pytest.fixture(scope="module")
def image_with_other_pipes_version(docker_client: docker.DockerClient) -> Iterator[str]:
    """The test image, but its vendored dagster_pipes claims another version."""
    tag = "pipes-docker-test-other-pipes:latest"
    dockerfile = (
        f"FROM {TEST_IMAGE}\n"
        "RUN echo '__version__ = \"0.0.1-image\"' > /opt/pipes/dagster_pipes/version.py\n"
    ).encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    docker_client.images.build(
        fileobj=context, custom_context=True, tag=tag, network_mode="none", rm=True
    )
    yield tag
    docker_client.images.remove(tag, force=True)


def test_version_mismatch_rule_the_orchestrators_injected_copy_wins(
    make_client: MakeClient, run_asset: RunAsset, image_with_other_pipes_version: str
) -> None:
    image = image_with_other_pipes_version
    own = run_asset(make_client(), REPORT_PIPES_ORIGIN, image=image)
    injected = run_asset(make_client(), REPORT_PIPES_ORIGIN, image=image, inject_pipes=True)

    assert own.metadata["pipes_version"] == "0.0.1-image"
    assert injected.metadata["pipes_version"] == ORCHESTRATOR_PIPES_VERSION
    assert injected.metadata["pipes_file"].startswith(INJECT_PATH)


# --- the whole protocol --------------------------------------------------------------------

MULTI_ASSET_JOB = """
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    for level in ("debug", "info", "warning", "error", "critical"):
        getattr(pipes.log, level)(f"a {level} message")
    pipes.report_custom_message({"progress": 0.5})
    pipes.report_asset_materialization(
        asset_key="orders", metadata={"rows": 120, "source": pipes.get_extra("source")},
        data_version="orders-v7",
    )
    pipes.report_asset_materialization(asset_key="customers", metadata={"rows": 30})
    pipes.report_asset_check(
        asset_key="orders", check_name="orders_not_empty", passed=True,
        metadata={"rows": 120},
    )
    pipes.report_custom_message("done")
"""


def test_multi_asset_gets_two_materializations_a_check_logs_and_custom_messages(
    make_client: MakeClient,
) -> None:
    client = make_client()
    custom_messages: list[object] = []

    @multi_asset(
        specs=[AssetSpec("orders"), AssetSpec("customers")],
        check_specs=[AssetCheckSpec("orders_not_empty", asset="orders")],
    )
    def orders_and_customers(context: AssetExecutionContext):  # type: ignore[no-untyped-def]
        invocation = client.run(
            context=context,
            image=TEST_IMAGE,
            command=["python", "-c", MULTI_ASSET_JOB],
            extras={"source": "warehouse"},
        )
        custom_messages.extend(invocation.get_custom_messages())
        yield from invocation.get_results()

    with DagsterInstance.ephemeral() as instance:
        result = materialize([orders_and_customers], instance=instance)
        entries = [
            (entry.level, entry.user_message)
            for entry in instance.all_logs(result.run_id)
            if entry.dagster_event is None
        ]

    materializations = {
        m.asset_key: m for m in result.asset_materializations_for_node("orders_and_customers")
    }
    orders = materializations[AssetKey("orders")]
    assert orders.metadata["rows"].value == 120
    assert orders.metadata["source"].value == "warehouse"
    assert orders.tags is not None and orders.tags["dagster/data_version"] == "orders-v7"
    assert materializations[AssetKey("customers")].metadata["rows"].value == 30

    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "orders_not_empty"
    assert evaluation.passed
    assert evaluation.metadata["rows"].value == 120

    assert custom_messages == [{"progress": 0.5}, "done"]
    for level in ("debug", "info", "warning", "error", "critical"):
        assert (getattr(logging, level.upper()), f"a {level} message") in entries


def test_partitioned_asset_receives_its_partition_key(make_client: MakeClient) -> None:
    client = make_client()
    code = """
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.report_asset_materialization(metadata={"partition": pipes.partition_key})
"""

    @asset(partitions_def=StaticPartitionsDefinition(["eu", "us"]))
    def regional_sales(context: AssetExecutionContext) -> MaterializeResult:
        return client.run(
            context=context, image=TEST_IMAGE, command=["python", "-c", code]
        ).get_materialize_result()

    with DagsterInstance.ephemeral() as instance:
        result = materialize([regional_sales], instance=instance, partition_key="us")

    (materialization,) = result.asset_materializations_for_node("regional_sales")
    assert materialization.partition == "us"
    assert materialization.metadata["partition"].value == "us"
