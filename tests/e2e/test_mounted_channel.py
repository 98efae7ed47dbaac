"""The compose dev stack with a host dir mapped for the mounted channel (mounted-channel.yml).

``PIPES_DOCKER_HOST_TEMP_DIR`` makes ``scripts/dev.sh up`` mount that host dir into the code
service and hand both of its names to the client
(``PipesDockerAutoChannel(temp_dir_root=..., host_temp_dir_root=...)``): the job containers
then get the context and write their messages through a bind mount the engine resolves on
the host, and the run's temp dir is gone afterwards.
"""

from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from playwright.sync_api import Page, expect

from . import ui
from .conftest import Stack, running_stack


@pytest.fixture(scope="module")
def host_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack-pipes-tmp")


@pytest.fixture(scope="module")
def stack(docker_client: docker.DockerClient, host_temp_dir: Path) -> Iterator[Stack]:
    with running_stack(docker_client, PIPES_DOCKER_HOST_TEMP_DIR=str(host_temp_dir)) as stack:
        yield stack


def test_a_mapped_host_dir_makes_the_stack_use_the_mounted_channel(
    stack: Stack, host_temp_dir: Path, page: Page, shot: Callable[[str], Path]
) -> None:
    ui.run_from_asset_page(page, stack.url, "word_counts")
    ui.select_step(page, "word_counts")
    ui.open_log_view(page, "stdout")
    expect(page.get_by_text("read 16 words").filter(visible=True)).to_have_count(1)
    shot("stdout")

    page.goto(f"{stack.url}/assets/word_counts", wait_until="domcontentloaded")
    expect(ui.metadata_value(page, "pipes_docker/transport")).to_have_text("mounted")
    expect(ui.metadata_value(page, "word_count")).to_have_text("16")
    page.get_by_role("cell", name="pipes_docker/transport").scroll_into_view_if_needed()
    shot("asset-metadata")
    assert list(host_temp_dir.iterdir()) == [], "the run's temp dir was left behind"
