"""What a user does in the Dagster UI, as Playwright steps.

Locators follow what a user sees: roles, names and texts. The few places where the UI offers
nothing better (an asset node of the graph, a step's bar in the run's Gantt chart) use the
``data-tooltip`` attribute that carries the asset or step name.
"""

import re

from playwright.sync_api import Locator, Page, expect

RUN_TIMEOUT_MS = 120_000


def open_asset_graph(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/asset-groups", wait_until="domcontentloaded")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()


def open_group_graph(page: Page, base_url: str, location: str, group: str) -> None:
    """The lineage of one asset group (the global one folds groups once there are several)."""
    page.goto(
        f"{base_url}/locations/{location}/asset-groups/{group}", wait_until="domcontentloaded"
    )


def graph_node(page: Page, asset: str) -> Locator:
    return page.locator(f"foreignObject [data-tooltip='{asset}']")


def materialize_from_graph(page: Page, asset: str) -> None:
    """Select the asset's node in the graph and press "Materialize selected"."""
    graph_node(page, asset).click()
    page.get_by_role("button", name=re.compile("Materialize selected")).click()


def materialize_from_asset_page(page: Page, base_url: str, asset: str) -> None:
    page.goto(f"{base_url}/assets/{asset}", wait_until="domcontentloaded")
    page.get_by_role("button", name=re.compile(r"Materialize$")).click()


def open_launched_run(page: Page) -> str:
    """Follow the "Launched run ... View" toast to the run's page; return the run id."""
    page.get_by_role("link", name="View", exact=True).click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    match = re.search(r"/runs/([0-9a-f-]{36})", page.url)
    assert match, page.url
    return match.group(1)


def wait_for_run_status(page: Page, status: str) -> None:
    """Wait until the run page's header shows ``status`` ("Success", "Failure")."""
    expect(page.get_by_text(status, exact=True).first).to_be_visible(timeout=RUN_TIMEOUT_MS)


def run_from_asset_page(page: Page, base_url: str, asset: str, status: str = "Success") -> str:
    """Materialize ``asset`` from its page, open the launched run and wait until it shows
    ``status``; return the run id."""
    materialize_from_asset_page(page, base_url, asset)
    run_id = open_launched_run(page)
    wait_for_run_status(page, status)
    return run_id


def select_step(page: Page, step: str) -> None:
    """Click the step's bar in the run's Gantt chart (the log views need a step selected)."""
    page.locator(f".chart-element.box[data-tooltip='{step}']").click()
    expect(page.get_by_role("button", name=re.compile(f"Re-execute.*{step}"))).to_be_visible()


def open_log_view(page: Page, kind: str) -> None:
    """Switch the run's log panel to "Events", "stdout" or "stderr"."""
    # The button's name starts with its icon's label ("console stdout").
    page.get_by_role("button", name=re.compile(rf"\b{kind}$")).click()
    if kind != "Events":
        # A compute log view ends with the path of the file it shows (.out or .err).
        suffix = ".out" if kind == "stdout" else ".err"
        expect(page.get_by_text(re.compile(rf"compute_logs/\w+\{suffix}$"))).to_be_visible()


def metadata_value(page: Page, key: str) -> Locator:
    """The value cell of ``key`` in the asset page's metadata table."""
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=key, exact=True))
    return row.get_by_role("cell").last


def open_step_failure(page: Page) -> Locator:
    """Open the STEP_FAILURE event's full message; return the dialog that shows it."""
    row = (
        page.locator("div")
        .filter(has=page.get_by_text("STEP_FAILURE", exact=True))
        .filter(has=page.get_by_role("button", name="View full message"))
        .last
    )
    row.get_by_role("button", name="View full message").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    return dialog


def open_asset_check(page: Page, base_url: str, asset: str, check: str) -> None:
    """The asset page's Checks tab, with ``check`` picked from its list."""
    page.goto(f"{base_url}/assets/{asset}", wait_until="domcontentloaded")
    page.get_by_role("tab", name="Checks").click()
    page.get_by_text(check, exact=True).first.click()
    expect(page.get_by_text("Evaluation result")).to_be_visible()
