"""A person in a browser: open the Dagster UI, materialize a partition, watch it succeed; follow a
registered model from Dagster to MLflow and back."""

import contextlib
import os
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter
from mlflow.tracking import MlflowClient
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


def _follow(page, href: str):
    """Click the link to ``href`` like a person; returns the page it opened (a new tab for target=_blank)."""
    link = page.locator(f'a[href="{href}"]').first
    link.wait_for(timeout=60_000)
    if link.get_attribute("target") == "_blank":
        with page.context.expect_page() as opened:
            link.click()
        target = opened.value
    else:
        link.click()
        target = page
    target.wait_for_load_state("load")  # the MLflow UI keeps polling: "networkidle" may never come
    return target


def test_follow_a_registered_model_from_dagster_to_mlflow_and_back(stack, browser):
    """The registered version's materialization links to MLflow; its MLflow page links back to the Dagster run."""
    instance = DagsterInstance.get()
    records = instance.fetch_materializations(AssetKey("registered_demand_model"), limit=1).records
    if not records:
        pytest.skip("no registered_demand_model materialization yet: run with test_backfill.py (the e2e package)")
    record = records[0]
    metadata = record.asset_materialization.metadata
    name, version = metadata["model"].value.removeprefix("models:/").split("/")
    version_url = metadata["mlflow_model_version"].url
    assert version_url == f"{stack.mlflow_url}/#/models/{name}/versions/{version}"
    assert metadata["mlflow_run"].url.startswith(f"{stack.mlflow_url}/#/experiments/")
    tags = MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_model_version(name, version).tags
    partition = quote(record.partition_key, safe="")  # nyc|2026-… as Dagster writes it
    asset_url = f"{stack.dagster_url}/assets/registered_demand_model?view=partitions&partition={partition}"
    assert tags["mltrain.dagster_asset_url"] == asset_url
    # The run that registered the version (a repeated backfill's run found it registered and replayed it).
    registered_by = tags["mltrain.dagster_run_id"]
    assert instance.get_run_by_id(registered_by).status == DagsterRunStatus.SUCCESS
    assert tags["mltrain.dagster_run_url"] == f"{stack.dagster_url}/runs/{registered_by}"

    # Dagster: the asset partition the version's tag points at shows the materialization's MLflow links.
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(asset_url, wait_until="networkidle")
    _dismiss_welcome(page)
    mlflow_page = _follow(page, version_url)
    assert mlflow_page.url == version_url
    mlflow_page.set_viewport_size({"width": 1600, "height": 1000})
    mlflow_page.get_by_text("mltrain.dagster_run_url").first.wait_for(timeout=60_000)  # the version's tags
    mlflow_page.get_by_text("Promotion").first.wait_for(timeout=10_000)  # its description
    with contextlib.suppress(PlaywrightTimeout):  # MLflow 3.17 opens its assistant beside the page
        mlflow_page.get_by_role("button", name="Close", exact=True).click(timeout=3_000)
    mlflow_page.screenshot(path=str(ARTIFACTS / "ui-dagster-to-mlflow.png"), full_page=True)

    # MLflow: the description's Dagster run link leads back to the run that registered the version.
    dagster_page = _follow(mlflow_page, tags["mltrain.dagster_run_url"])
    assert dagster_page.url == tags["mltrain.dagster_run_url"]
    dagster_page.set_viewport_size({"width": 1600, "height": 1000})
    _dismiss_welcome(dagster_page)
    dagster_page.get_by_text("Success", exact=True).first.wait_for(timeout=60_000)
    dagster_page.get_by_text("registered_demand_model").first.wait_for(timeout=10_000)
    dagster_page.screenshot(path=str(ARTIFACTS / "ui-mlflow-to-dagster.png"))


def _utc(timestamp: float):
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
