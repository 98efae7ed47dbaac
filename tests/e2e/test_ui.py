"""The compose dev stack, used from the Dagster UI in a real browser.

The stack (``scripts/dev.sh up``) runs with the client's default settings: its code location
runs in a container on the host's engine, so the job containers are siblings and the default
channel streams. A user materializes an asset from the asset graph, reads what the container
wrote in the step's stdout and stderr views, finds the run metadata on the asset's page, and
sees a failing container's exit code and stderr tail in the error view. The YAML-only code
location (examples/dg_project) adds a shell-only job whose metadata and check come from the
`dagster-pipes` shell command, and an unchanged legacy job whose metadata comes from output
rules and whose file is copied out into the code location's container.
"""

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from playwright.sync_api import Locator, Page, expect

from . import ui
from .conftest import Stack, running_stack

# What images/example/job.py writes: one line to each stream.
STDOUT_LINE = "read 16 words"
STDERR_LINE = "this line goes to stderr"
# What examples/compose/definitions.py's failing_report container writes before exiting with 3.
FAILING_STDERR_LINE = "partner feed is empty: nothing to load"
# What examples/dg_project's legacy_export job writes, and where copy_out puts it in the stack
# (PIPES_DOCKER_EXAMPLE_FILES, examples/compose/docker-compose.yml).
EXPORT_CSV = b"region,total\nnorth,120\nsouth,95\neast,143\n"
EXPORT_IN_CONTAINER = "/out/export.csv"
EXPORT_ARRIVED = "/dagster-home/files/yaml_legacy_export/export.csv"


def visible_text(page: Page, text: str) -> Locator:
    # The UI keeps the other log view in the page, hidden: only what is shown counts.
    return page.get_by_text(text).filter(visible=True)


@pytest.fixture(scope="module")
def stack(docker_client: docker.DockerClient) -> Iterator[Stack]:
    with running_stack(docker_client) as stack:
        yield stack


def test_materialize_from_the_graph_and_read_the_containers_output(
    stack: Stack, page: Page, shot: Callable[[str], Path]
) -> None:
    # The stack has two code locations (examples/compose, examples/dg_project): the global
    # lineage folds their groups, so the graph of this one's group is opened.
    ui.open_group_graph(page, stack.url, "pipes-docker-stack", "default")
    expect(ui.graph_node(page, "word_counts")).to_be_visible()
    expect(ui.graph_node(page, "failing_report")).to_be_visible()
    shot("asset-graph")

    ui.materialize_from_graph(page, "word_counts")
    ui.open_launched_run(page)
    ui.wait_for_run_status(page, "Success")
    shot("run-succeeded")

    ui.select_step(page, "word_counts")
    ui.open_log_view(page, "stdout")
    expect(visible_text(page, STDOUT_LINE)).to_have_count(1)
    expect(visible_text(page, STDERR_LINE)).to_have_count(0)
    shot("stdout")

    ui.open_log_view(page, "stderr")
    expect(visible_text(page, STDERR_LINE)).to_have_count(1)
    expect(visible_text(page, STDOUT_LINE)).to_have_count(0)
    # The streamed channel's Pipes messages travel on stderr; they are not user output.
    expect(visible_text(page, "__dagster_pipes_version")).to_have_count(0)
    shot("stderr")

    page.goto(f"{stack.url}/assets/word_counts", wait_until="domcontentloaded")
    expect(ui.metadata_value(page, "word_count")).to_have_text("16")
    expect(ui.metadata_value(page, "pipes_docker/exit_code")).to_have_text("0")
    expect(ui.metadata_value(page, "pipes_docker/transport")).to_have_text("streamed")
    expect(ui.metadata_value(page, "pipes_docker/image")).to_have_text(
        "pipes-docker-example:latest"
    )
    page.get_by_role("cell", name="pipes_docker/transport").scroll_into_view_if_needed()
    shot("asset-metadata")


def test_a_failing_container_shows_its_exit_code_and_stderr_in_the_error_view(
    stack: Stack, page: Page, shot: Callable[[str], Path]
) -> None:
    ui.run_from_asset_page(page, stack.url, "failing_report", "Failure")
    shot("run-failed")

    error = ui.open_step_failure(page)
    expect(error).to_contain_text("exited with code 3")
    expect(error).to_contain_text("pipes-docker-testjob:latest")
    expect(error).to_contain_text(FAILING_STDERR_LINE)
    shot("error-view")


def test_a_yaml_defined_asset_materializes_with_its_metadata_and_logs(
    stack: Stack, page: Page, shot: Callable[[str], Path]
) -> None:
    # examples/dg_project/src/dg_example/defs/word_counts/defs.yaml: no Python, a second code
    # location of the stack (the dg-code service).
    ui.run_from_asset_page(page, stack.url, "yaml_word_counts")
    # The job's dagster-pipes log line, in the run's event log.
    expect(visible_text(page, "counting words for asset yaml_word_counts").first).to_be_visible()
    shot("yaml-run-succeeded")

    ui.select_step(page, "yaml_word_counts")
    ui.open_log_view(page, "stdout")
    expect(visible_text(page, STDOUT_LINE)).to_have_count(1)
    shot("yaml-stdout")

    page.goto(f"{stack.url}/assets/yaml_word_counts", wait_until="domcontentloaded")
    expect(
        page.get_by_text("Word counts from the example Pipes job, declared in YAML.").first
    ).to_be_visible()
    expect(ui.metadata_value(page, "word_count")).to_have_text("16")
    expect(ui.metadata_value(page, "pipes_docker/exit_code")).to_have_text("0")
    expect(ui.metadata_value(page, "pipes_docker/image")).to_have_text(
        "pipes-docker-example:latest"
    )
    shot("yaml-asset-metadata")


def test_a_shell_only_yaml_asset_shows_its_metadata_and_its_passing_check(
    stack: Stack, page: Page, shot: Callable[[str], Path]
) -> None:
    # examples/dg_project/src/dg_example/defs/shell_report/defs.yaml: a BusyBox image with no
    # Python; the job reports through the injected `dagster-pipes` shell command.
    ui.run_from_asset_page(page, stack.url, "yaml_shell_report")
    expect(visible_text(page, "counted 3 lines in yaml_shell_report").first).to_be_visible()
    expect(
        visible_text(page, "succeeded for materialization of").filter(has_text="has_lines").first
    ).to_be_visible()
    shot("shell-run-succeeded")

    page.goto(f"{stack.url}/assets/yaml_shell_report", wait_until="domcontentloaded")
    expect(ui.metadata_value(page, "lines")).to_have_text("3")
    expect(ui.metadata_value(page, "shell")).to_have_text("busybox")
    expect(ui.metadata_value(page, "pipes_docker/image")).to_have_text(
        "pipes-docker-shell-busybox:latest"
    )
    shot("shell-asset-metadata")

    ui.open_asset_check(page, stack.url, "yaml_shell_report", "has_lines")
    # The list says "Succeeded" under the check's name, its latest execution "Passed".
    expect(page.get_by_text("Succeeded", exact=True)).to_be_visible()
    expect(page.get_by_text("Passed", exact=True)).to_be_visible()
    expect(ui.metadata_value(page, "lines")).to_have_text("3")
    shot("shell-check-passed")


def test_a_legacy_yaml_asset_shows_its_rule_metadata_and_the_file_it_brought_back(
    stack: Stack, page: Page, shot: Callable[[str], Path], docker_client: docker.DockerClient
) -> None:
    # examples/dg_project/src/dg_example/defs/legacy_export/defs.yaml: an unchanged job; output
    # rules read its lines, copy_out brings its CSV back into the code location's container.
    ui.run_from_asset_page(page, stack.url, "yaml_legacy_export")
    # The job's WARNING line, logged by a rule; the rule-made check.
    expect(visible_text(page, "WARNING region west had no data").first).to_be_visible()
    expect(
        visible_text(page, "succeeded for materialization of")
        .filter(has_text="export_complete")
        .first
    ).to_be_visible()
    shot("legacy-run-succeeded")

    page.goto(f"{stack.url}/assets/yaml_legacy_export", wait_until="domcontentloaded")
    expect(ui.metadata_value(page, "rows")).to_have_text("3")
    files = ui.metadata_value(page, "pipes_docker/files")
    expect(files).to_contain_text(f'"{EXPORT_IN_CONTAINER}"')
    expect(files).to_contain_text(f'"path": "{EXPORT_ARRIVED}"')
    expect(files).to_contain_text(f'"size": {len(EXPORT_CSV)}')
    expect(files).to_contain_text(f'"sha256": "{hashlib.sha256(EXPORT_CSV).hexdigest()}"')
    page.get_by_role("cell", name="pipes_docker/files", exact=True).scroll_into_view_if_needed()
    shot("legacy-asset-metadata")

    # The file is where the metadata says: in the code location's container (dg-code).
    (code,) = docker_client.containers.list(
        filters={
            "label": [
                f"com.docker.compose.project={stack.project}",
                "com.docker.compose.service=dg-code",
            ]
        }
    )
    done = code.exec_run(["cat", EXPORT_ARRIVED])
    assert (done.exit_code, done.output) == (0, EXPORT_CSV)
