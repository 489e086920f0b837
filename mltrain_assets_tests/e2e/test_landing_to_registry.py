"""A new day lands; the running daemon's sensors and automation take it to registered models."""

import subprocess
import sys

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter
from mlflow.tracking import MlflowClient

from mltrain_assets.simulate import simulate
from mltrain_assets_tests.e2e.conftest import E2E_CITIES, INTERACTIONS, NEW_DAY
from mltrain_assets_tests.e2e.waiting import wait_until

pytestmark = pytest.mark.e2e


def _versions_for(client: MlflowClient, name: str, partition: str) -> list:
    # A model not registered yet is an empty result; any other error fails the test at once.
    return [v for v in client.search_model_versions(f"name = '{name}'") if v.tags.get("mltrain.partition") == partition]


def test_landed_day_is_ingested_by_sensor_and_flows_to_registered_models(stack, e2e_env):
    cities = E2E_CITIES.split(",")
    landing = e2e_env["MLTRAIN_LANDING_URI"]
    simulate("rides", landing, NEW_DAY, NEW_DAY, cities=cities)
    simulate("interactions", landing, NEW_DAY, NEW_DAY, **INTERACTIONS)
    instance = DagsterInstance.get()
    client = MlflowClient(e2e_env["MLFLOW_TRACKING_URI"])

    def sensor_runs_succeeded():
        runs = {
            key: instance.get_runs(RunsFilter(tags={"dagster/run_key": key}))
            for key in (f"rides:{NEW_DAY}", f"interactions:{NEW_DAY}")
        }
        return all(r and r[0].status == DagsterRunStatus.SUCCESS for r in runs.values()) and runs

    runs = wait_until(sensor_runs_succeeded, timeout_s=240, what="the landing sensors' runs", instance=instance)
    assert all(len(r) == 1 for r in runs.values()), "a date is launched once"

    def all_registered():
        demand = [_versions_for(client, f"demand-forecast-{c}", f"{c}|{NEW_DAY}") for c in cities]
        recsys = _versions_for(client, "recommender", NEW_DAY)
        return all(demand) and recsys and (demand, recsys)

    demand, recsys = wait_until(
        all_registered, timeout_s=900, what="registered models for the new day", instance=instance
    )
    for versions in [*demand, recsys]:
        tags = versions[0].tags
        assert {
            "mltrain.code_commit",
            "mltrain.data_snapshot_id",
            "mltrain.data_snapshot_uri",
            "mltrain.dagster_run_id",
        } <= set(tags)
    assert client.get_model_version_by_alias("recommender", "staging").version == recsys[0].version

    def inference_done():
        forecasts = instance.get_materialized_partitions(AssetKey("demand_forecasts"))
        recommended = instance.get_materialized_partitions(AssetKey("recommendations"))
        return {f"{c}|{NEW_DAY}" for c in cities} <= set(forecasts) and NEW_DAY in recommended

    wait_until(inference_done, timeout_s=300, what="forecasts and recommendations after promotion", instance=instance)


POOLED_STEPS = {"city_demand_features": "spark", "city_demand_model": "training", "recommender_model": "training"}


def test_runs_the_daemon_launched_for_the_new_day_execute_pooled_steps(stack):
    """Concurrency applies to automation runs too: their steps claim the spark/training pools."""
    instance = DagsterInstance.get()
    automation_runs = [
        r
        for r in instance.get_runs(RunsFilter(tags={"dagster/sensor_name": "mltrain_automation_sensor"}))
        if r.tags.get("dagster/partition", "").endswith(NEW_DAY) or NEW_DAY in r.tags.get("dagster/partition", "")
    ]
    seen = {}
    for run in automation_runs:
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        seen.update({step.key: step.pool for step in plan.steps if step.key in POOLED_STEPS})
    assert seen == POOLED_STEPS, f"pooled steps in the daemon's automation runs for {NEW_DAY}: {seen}"


def test_the_registered_recommender_has_a_lineage_and_rebuilds_bit_for_bit(stack, e2e_env, tmp_path):
    """What the daemon registered for the new day: `mltrain lineage` names it all, `mltrain reproduce` rebuilds it."""
    client = MlflowClient(e2e_env["MLFLOW_TRACKING_URI"])
    (version,) = _versions_for(client, "recommender", NEW_DAY)

    def mltrain(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "mltrain_assets.cli", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=900, env=e2e_env)

    lineage = mltrain("lineage", "recommender", str(version.version))
    assert lineage.returncode == 0, lineage.stderr[-3000:]
    text = lineage.stdout
    assert f"recommender v{version.version}" in text and f"partition {NEW_DAY}" in text
    assert "workload mltrain_assets.pipelines.recsys.workloads.train.launcher" in text
    assert f"interaction_embeddings {NEW_DAY} v=" in text
    # Embeddings from D-14..D-8, training from D-7..D-1, the held-out day: each a landed, ingested day.
    assert text.count(" user_interactions ") >= 15 and text.count(": _SUCCESS sha256 ") == 15

    rebuilt = mltrain("reproduce", "recommender", str(version.version), "--scratch", str(tmp_path))
    assert rebuilt.returncode == 0, rebuilt.stdout[-3000:] + rebuilt.stderr[-3000:]
    assert "metrics equal: True; model files (weights) identical: True; every version identical: True" in rebuilt.stdout
