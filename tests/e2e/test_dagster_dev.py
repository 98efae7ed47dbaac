"""The README's ``dagster dev -m examples.definitions`` works as written: the UI answers and
shows the example code location's assets."""

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from . import ui
from .conftest import ROOT, free_port, wait_for_http

EXAMPLE_ASSETS = ("word_counts", "legacy_report", "platform_summary", "chunked_report")


@pytest.fixture
def dagster_dev(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path / "dagster-dev.log"
    dagster = Path(sys.executable).with_name("dagster")
    (tmp_path / "home").mkdir()
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [str(dagster), "dev", "-m", "examples.definitions", "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT,
            env={**os.environ, "DAGSTER_HOME": str(tmp_path / "home")},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its webserver, daemon and code server stop with it
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/server_info", timeout=120, alive=lambda: server.poll() is None)
    except (RuntimeError, TimeoutError) as exc:
        stop(server)
        tail = log_path.read_text(errors="replace")[-3000:]
        pytest.fail(f"dagster dev did not come up: {exc}\n{tail}", pytrace=False)
    yield url
    code = stop(server)
    assert code == 0, log_path.read_text(errors="replace")[-3000:]


def stop(server: subprocess.Popen[bytes]) -> int | None:
    """SIGINT, as Ctrl-C would send it; SIGKILL to the group if it does not exit in time."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    return server.returncode


def test_dagster_dev_serves_the_example_code_location(
    dagster_dev: str, page: Page, shot: Callable[[str], Path]
) -> None:
    ui.open_asset_graph(page, dagster_dev)
    for asset in EXAMPLE_ASSETS:
        expect(ui.graph_node(page, asset)).to_be_visible()
    shot("asset-graph")
