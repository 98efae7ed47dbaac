"""Fixtures for the end-to-end tests: the compose dev stack, and Debian's chromium driven by
Playwright, as a user sees Dagster.

A missing browser, image or stack is an error here, never a skip. Each test gets a fresh
browser context (so Dagster's first-run dialog shows again, and is skipped); screenshots of
every step go to ``.build/e2e-artifacts/`` (and one of the page a test failed on).
"""

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".build" / "e2e-artifacts"
CHROMIUM = "/usr/bin/chromium"
# Flags for chromium as root in a container-like machine with no GPU, and nothing that phones
# home (component updates, sync, background networking).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STACK_IMAGES = (
    "pipes-docker-dagster:latest",
    "pipes-docker-example:latest",
    "pipes-docker-testjob:latest",
    "pipes-docker-shell-busybox:latest",  # examples/dg_project's shell jobs
)
UI_TIMEOUT_MS = 30_000


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.e2e)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if terminalreporter.config.stash.get(_SCREENSHOTS_TAKEN, False):
        terminalreporter.write_line(f"e2e screenshots: {ARTIFACTS}")


_SCREENSHOTS_TAKEN = pytest.StashKey[bool]()


# Each test's reports by phase, so the page fixture knows whether the test failed.
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_http(url: str, timeout: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Poll ``url`` until it answers 200; fail early once ``alive()`` turns false."""
    deadline = time.monotonic() + timeout
    while True:
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url, timeout=2) as response,
        ):
            if response.status == 200:
                return
        if not alive():
            raise RuntimeError(f"{url}: the server exited")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.5)


@dataclass(frozen=True)
class Stack:
    """A running compose dev stack (scripts/dev.sh up)."""

    project: str
    url: str
    env: dict[str, str]


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"No Docker engine answers ({exc}): run scripts/setup.sh", pytrace=False)
    for image in STACK_IMAGES:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"Image {image} is missing: run images/build.sh", pytrace=False)
    yield client
    client.close()


@contextlib.contextmanager
def running_stack(docker_client: docker.DockerClient, **settings: str) -> Iterator[Stack]:
    """``scripts/dev.sh up`` with its own project name and port, then ``down``, which must
    leave no container (the stack's or a job's), volume or network behind."""
    networks_before = {network.name for network in docker_client.networks.list()}
    project = f"pipes-docker-e2e-{uuid.uuid4().hex[:6]}"
    port = free_port()
    env = {
        **os.environ,
        "PIPES_DOCKER_DEV_PROJECT": project,
        "PIPES_DOCKER_DEV_PORT": str(port),
        # scripts/test.sh has run setup; the images are checked by docker_client.
        "PIPES_DOCKER_DEV_SKIP_SETUP": "1",
        **settings,
    }
    try:
        up = dev_sh("up", env, timeout=240)
        if up.returncode != 0:
            pytest.fail(
                f"scripts/dev.sh up failed ({up.returncode}):\n{up.stderr[-4000:]}",
                pytrace=False,
            )
        yield Stack(project=project, url=f"http://127.0.0.1:{port}", env=env)
    finally:
        down = dev_sh("down", env, timeout=120)
    assert down.returncode == 0, f"scripts/dev.sh down failed:\n{down.stderr[-2000:]}"
    compose_label = f"com.docker.compose.project={project}"
    job_label = f"io.pipes-docker.dev-stack={project}"
    left = [
        container.name
        for label in (compose_label, job_label)
        for container in docker_client.containers.list(all=True, filters={"label": label})
    ]
    left += [volume.name for volume in docker_client.volumes.list(filters={"label": compose_label})]
    assert not left, f"scripts/dev.sh down left behind: {left}"
    new_networks = {network.name for network in docker_client.networks.list()} - networks_before
    assert not new_networks, f"the stack created networks: {sorted(new_networks)}"


def dev_sh(command: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / "dev.sh"), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# Module scope, not session: while Playwright's sync API is active it marks its event loop as
# running in this thread, so any asyncio.run() elsewhere (Dagster uses it) would fail. Stopped
# at the end of each module, it leaves the other tests' thread as it found it.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as playwright:
        yield playwright
    asyncio.run(asyncio.sleep(0))  # fails if Playwright left its loop marked as running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh", pytrace=False)
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def artifacts(pytestconfig: pytest.Config) -> Path:
    """The screenshots' dir, emptied once per session; its path ends the test report."""
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    pytestconfig.stash[_SCREENSHOTS_TAKEN] = True
    return ARTIFACTS


@pytest.fixture
def page(browser: Browser, artifacts: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    # A fresh instance greets every new browser with "Join the Dagster community"; it can pop
    # up over any page, so it is dismissed whenever it appears.
    page.add_locator_handler(
        page.get_by_role("button", name="Skip", exact=True), lambda skip: skip.click()
    )
    yield page
    reports = request.node.stash.get(_REPORTS, {})
    if "call" in reports and reports["call"].failed:
        page.screenshot(path=artifacts / f"FAILED-{request.node.name}.png", full_page=True)
    context.close()


@pytest.fixture
def shot(page: Page, artifacts: Path, request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """Save a screenshot of the page as ``{test name}-{nn}-{step}.png``."""
    count = 0

    def take(step: str) -> Path:
        nonlocal count
        count += 1
        path = artifacts / f"{request.node.name}-{count:02d}-{step}.png"
        page.screenshot(path=path, animations="disabled")
        return path

    return take
