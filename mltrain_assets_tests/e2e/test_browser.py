"""A person in a browser: open the Dagster UI, materialize a partition, watch it succeed."""

import contextlib
import time
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from mltrain_assets_tests.e2e.waiting import wait_until

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} not found: install Debian's chromium (`apt-get install -y chromium`; .ci/run does this)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def _dismiss_welcome(page) -> None:
    # The "Join the Dagster community" dialog only shows on a fresh instance.
    with contextlib.suppress(PlaywrightTimeout):
        page.get_by_role("button", name="Skip").click(timeout=5_000)


def test_materialize_a_partition_from_the_ui(stack, history, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    instance = DagsterInstance.get()
    latest = history["latest"]
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(f"{stack.dagster_url}/assets/ride_events", wait_until="networkidle")
    _dismiss_welcome(page)
    started = time.time()

    page.get_by_role("button", name="Materialize…").click()
    page.get_by_role("button", name="Latest").click()
    page.screenshot(path=str(ARTIFACTS / "ui-materialize-dialog.png"))
    page.get_by_role("button", name="Launch 1 run").click()

    def ui_run():
        runs = instance.get_runs(RunsFilter(tags={"dagster/partition": latest}, created_after=_utc(started)))
        return [r for r in runs if "ride_events" in str(r.asset_selection)]

    run = wait_until(ui_run, timeout_s=60, what="the run launched from the UI", instance=instance)[0]
    page.goto(f"{stack.dagster_url}/runs/{run.run_id}", wait_until="networkidle")
    page.get_by_text("Success", exact=True).first.wait_for(timeout=240_000)
    page.screenshot(path=str(ARTIFACTS / "ui-run-success.png"), full_page=True)

    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.SUCCESS
    record = instance.get_latest_materialization_event(AssetKey("ride_events"))
    assert record is not None and record.run_id == run.run_id
    assert latest in instance.get_materialized_partitions(AssetKey("ride_events"))

    page.goto(f"{stack.dagster_url}/asset-groups", wait_until="networkidle")
    page.wait_for_timeout(3_000)
    page.screenshot(path=str(ARTIFACTS / "ui-asset-graph.png"))


def _utc(timestamp: float):
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
