"""A date-range backfill launched through the public interface (`mltrain backfill` -> GraphQL)."""

import datetime as dt
import subprocess
import sys

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance, RunsFilter
from mlflow.tracking import MlflowClient

from mltrain_assets_tests.e2e.conftest import BACKFILL_DAYS, E2E_CITIES, NEW_DAY

pytestmark = pytest.mark.e2e

CITIES = E2E_CITIES.split(",")
# Every partition of a range, in dependency order, twice (the second changes nothing).
DATES = [(dt.date.fromisoformat(NEW_DAY) - dt.timedelta(days=k)).isoformat() for k in range(BACKFILL_DAYS, 0, -1)]


def _backfill(stack) -> str:
    command = [
        sys.executable,
        "-m",
        "mltrain_assets.cli",
        "backfill",
        "--pipeline",
        "demand",
        "--start",
        DATES[0],
        "--end",
        DATES[-1],
        "--url",
        stack.dagster_url,
        "--wait",
        "--timeout",
        "900",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=960)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "COMPLETED" in result.stdout
    return result.stdout.split("backfill ", 1)[1].split()[0]


def _materializations_of(instance: DagsterInstance, backfill_id: str) -> list[dict]:
    run_ids = {r.run_id for r in instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))}
    assert run_ids, f"backfill {backfill_id} launched no runs"
    metadata = []
    for run_id in run_ids:
        for record in instance.all_logs(run_id):
            event = record.dagster_event
            if event and event.is_step_materialization:
                m = event.step_materialization_data.materialization
                metadata.append({"asset": m.asset_key.to_user_string(), **{k: v.value for k, v in m.metadata.items()}})
    return metadata


def test_backfill_materializes_every_partition_and_repeating_it_changes_nothing(stack, e2e_env):
    instance = DagsterInstance.get()
    client = MlflowClient(e2e_env["MLFLOW_TRACKING_URI"])

    first_id = _backfill(stack)
    features = set(instance.get_materialized_partitions(AssetKey("city_demand_features")))
    models = set(instance.get_materialized_partitions(AssetKey("city_demand_model")))
    registered = set(instance.get_materialized_partitions(AssetKey("registered_demand_model")))
    forecasts = set(instance.get_materialized_partitions(AssetKey("demand_forecasts")))
    for date in DATES:
        assert date in features
        for city in CITIES:  # every configured city (MLTRAIN_CITIES), so automation has nothing left to add
            assert f"{city}|{date}" in models and f"{city}|{date}" in registered and f"{city}|{date}" in forecasts
    first_runs = {r.run_id for r in instance.get_runs(RunsFilter(tags={"dagster/backfill": first_id}))}
    history = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(AssetKey("city_demand_model"), "mape_below_threshold"), limit=50
    )
    gate_runs = [r for r in history if r.run_id in first_runs]
    assert len(gate_runs) == len(DATES) * len(CITIES) and all(r.status.value == "SUCCEEDED" for r in gate_runs)
    assert all(r.event.dagster_event.event_specific_data.passed for r in gate_runs)
    first = _materializations_of(instance, first_id)
    mapes = [m["mape"] for m in first if m["asset"] == "city_demand_model"]
    assert len(mapes) == len(DATES) * len(CITIES) and all(v < 0.15 for v in mapes), mapes

    versions_before = {c: len(client.search_model_versions(f"name = 'demand-forecast-{c}'")) for c in CITIES}
    runs_before = len(client.search_runs(experiment_ids=[e.experiment_id for e in client.search_experiments()]))
    second = _materializations_of(instance, _backfill(stack))
    built = [m["asset"] for m in second if m.get("reused_committed_version") is False or m.get("dates_ingested_now")]
    assert built == [], f"the repeated backfill did data-plane work for {built}"
    assert not any(m.get("registered_now") for m in second)
    assert {c: len(client.search_model_versions(f"name = 'demand-forecast-{c}'")) for c in CITIES} == versions_before
    assert len(client.search_runs(experiment_ids=[e.experiment_id for e in client.search_experiments()])) == runs_before
