"""The demand pipeline end to end through Dagster: real DuckDB and Spark, a real MLflow store, real runs.

One date, two cities, the full trailing window of simulated rides. DuckDB computes the SQL and Spark
re-checks every cell (engine parity), so both engines run; DuckDB as the primary keeps `mltrain reproduce`
of the whole 35-day chain to ~30 s (Spark as the primary: the workload tests and the Spark cluster test). Asserts the registry
state, the lineage tags, idempotence (no work, no new versions on a second pass) and that
a day re-landed with hours missing is rejected at ingestion, changing nothing downstream.
"""

import datetime as dt
import json
import os
import subprocess
import sys

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from mltrain_assets.artifacts import read_manifest, read_table
from mltrain_assets.cli import demo
from mltrain_assets.pipelines.demand.contract import INPUT_DAYS
from mltrain_assets.pipelines.demand.params import TrainParams
from mltrain_assets.pipelines.demand.partitions import city_partition_key
from mltrain_assets.simulate import simulate

pytestmark = pytest.mark.slow

DATE = "2026-03-10"
CITIES = ["nyc", "sf"]
FIRST = (dt.date.fromisoformat(DATE) - dt.timedelta(days=INPUT_DAYS - 1)).isoformat()


def _run_all(cities=CITIES):
    outcomes = [demo.execute("ride_events_job", "ride_events", partition_range=(FIRST, DATE))]
    outcomes.append(demo.execute("demand_features_job", "features", partition_key=DATE))
    for city in cities:
        outcomes.append(demo.execute("demand_city_model_job", city, partition_key=city_partition_key(DATE, city)))
    return outcomes


@pytest.fixture(scope="module")
def pipeline_home(tmp_path_factory):
    """Simulate once and run the pipeline once for the module; tests read what it left."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("demand") / "mltrain"
    from mltrain_assets_tests.conftest import SETTINGS

    for name in SETTINGS:
        mp.delenv(name, raising=False)
    mp.setenv("MLTRAIN_HOME", str(home))
    from mltrain_assets.settings import apply_defaults

    mp.setenv("MLTRAIN_SQL_ENGINE", "duckdb")
    env = apply_defaults()
    for name, value in env.items():
        mp.setenv(name, value)
    simulate("rides", env["MLTRAIN_LANDING_URI"], FIRST, DATE, cities=CITIES)
    first = _run_all()
    yield env, first
    mp.undo()


def test_every_run_succeeds_and_gates_pass(pipeline_home):
    _, outcomes = pipeline_home
    assert [o.label for o in outcomes if not o.success] == [], [o.error for o in outcomes]
    checks = {name: passed for o in outcomes for name, passed in o.checks.items()}
    assert checks["ride_events:landed_complete"] and checks["ride_events:matches_contract"]
    assert checks["city_demand_model:mape_below_threshold"]
    # DuckDB computed the SQL; Spark recomputed it (2 cities x 4 hours x 7 aggregates; all the features): equal.
    assert checks["city_hour_aggregates:engine_parity"] and checks["city_demand_features:engine_parity"]
    described = {name: text for o in outcomes for name, text in o.check_descriptions.items()}
    assert f"{DATE}: duckdb vs spark: 56 cells" in described["city_hour_aggregates:engine_parity"]
    assert f"{DATE}: duckdb vs spark: " in described["city_demand_features:engine_parity"]


def test_each_raw_day_is_aggregated_once_and_features_read_only_aggregates(pipeline_home):
    _, outcomes = pipeline_home
    ingest = outcomes[0]
    assert ingest.materializations["city_hour_aggregates"]["dates_in_run"] == INPUT_DAYS
    assert ingest.materializations["city_hour_aggregates"]["dates_aggregated_now"] == INPUT_DAYS
    features = outcomes[1].materializations["city_demand_features"]
    manifest = read_manifest(features["uri"])
    assert len(manifest["inputs"]) == INPUT_DAYS
    assert all("/city_hour_aggregates/" in uri for uri in manifest["inputs"])
    # A features partition reads a few hundred aggregate rows per day, not the raw rides.
    assert features["rows_in"] <= INPUT_DAYS * len(CITIES) * 24 < ingest.materializations["ride_events"]["rows"]


def test_models_registered_with_lineage_and_aliased_staging(pipeline_home):
    env, outcomes = pipeline_home
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    city_runs = {o.label: o for o in outcomes[2:]}
    for city in CITIES:
        version = client.get_model_version_by_alias(f"demand-forecast-{city}", "staging")
        tags = version.tags
        assert tags["mltrain.partition"] == str(city_partition_key(DATE, city))
        assert tags["mltrain.dagster_run_id"] == city_runs[city].run_id
        assert len(tags["mltrain.code_commit"]) >= 7 and tags["mltrain.code_commit"] != "unknown"
        assert len(tags["mltrain.data_snapshot_uri"]) < 100 and len(tags["mltrain.data_snapshot_id"]) == 12
        snapshot = json.loads(mlflow.artifacts.load_text(tags["mltrain.data_snapshot_uri"]))
        features = snapshot["city_demand_features"]
        assert read_manifest(features["uri"]) is not None and features["uri"].endswith(f"v={features['version']}")
        assert snapshot["city_demand_model"]["uri"].startswith(env["MLTRAIN_STORAGE_URI"])
        mape = float(tags["mltrain.metric.mape"])
        assert 0 < mape < 0.15
        run = client.get_run(version.run_id)
        assert run.data.metrics["mape"] == pytest.approx(mape)


def test_forecasts_written_for_next_day(pipeline_home):
    _, outcomes = pipeline_home
    forecast_meta = outcomes[2].materializations["demand_forecasts"]
    uri = forecast_meta["uri"]
    table = read_table(uri, "forecasts.parquet").to_pandas()
    assert len(table) == 24
    assert (table["forecast_rides"] > 0).all()
    next_day = (dt.date.fromisoformat(DATE) + dt.timedelta(days=1)).isoformat()
    assert str(table["ts"].min().date()) == next_day


def test_second_pass_does_no_work_and_registers_nothing(pipeline_home):
    env, _ = pipeline_home
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    before = {c: len(client.search_model_versions(f"name = 'demand-forecast-{c}'")) for c in CITIES}
    runs_before = len(client.search_runs(experiment_ids=[e.experiment_id for e in client.search_experiments()]))
    again = _run_all()
    assert all(o.success for o in again)
    assert demo.data_plane_work(again) == 0
    assert demo.new_registrations(again) == 0
    after = {c: len(client.search_model_versions(f"name = 'demand-forecast-{c}'")) for c in CITIES}
    assert after == before == {c: 1 for c in CITIES}
    runs_after = len(client.search_runs(experiment_ids=[e.experiment_id for e in client.search_experiments()]))
    assert runs_after == runs_before, "no new MLflow training runs on unchanged inputs"


def _mltrain(*args: str, timeout: int = 600, **settings: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mltrain_assets.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **settings},
    )


def test_lineage_names_everything_the_registered_version_came_from(pipeline_home):
    env, outcomes = pipeline_home
    result = _mltrain("lineage", "demand-forecast-nyc", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    city_run = next(o for o in outcomes if o.label == "nyc")
    assert text.startswith("demand-forecast-nyc v1  (alias staging)")
    assert f"registered by Dagster run {city_run.run_id}" in text and "code commit " in text
    # The code version the manifest recorded is the one derived from the training workload's source.
    assert f"workload mltrain_assets.pipelines.demand.workloads.train  code {TrainParams.code_version}" in text
    assert TrainParams.code_version.startswith("src-")
    assert f'"city": "nyc", "date": "{DATE}"' in text
    features = outcomes[1].materializations["city_demand_features"]["version"]
    assert f"city_demand_features {DATE} v={features}" in text
    # Every day of the window: its aggregates, its ingested events and the landed day with its marker.
    for day in (FIRST, DATE):
        assert f"city_hour_aggregates {day} v=" in text and f"ride_events {day} v=" in text
        assert f"landed {env['MLTRAIN_LANDING_URI']}/rides/date={day}: _SUCCESS sha256 " in text
    assert text.count("  ride_events ") == INPUT_DAYS


def test_reproduce_rebuilds_the_version_bit_for_bit(pipeline_home, tmp_path):
    # Parity is a check beside the outputs, not part of them: the rebuild skips it (and Spark with it).
    result = _mltrain(
        "reproduce", "demand-forecast-nyc", "1", "--scratch", str(tmp_path), timeout=900, MLTRAIN_ENGINE_PARITY="false"
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "metrics equal: True; model files (weights) identical: True; every version identical: True" in result.stdout
    assert result.stdout.count(": identical (") == 2 * INPUT_DAYS + 2  # events + aggregates per day, features, model
    assert (tmp_path / "storage" / "city_demand_model" / "nyc" / DATE).is_dir()


def test_a_relanded_day_missing_hours_is_rejected_at_ingestion_and_changes_nothing(pipeline_home):
    """Runs last: a day re-lands with two hours missing; ingestion rejects it once, naming the rule, and
    commits nothing, so its last good version stays what aggregates, features and models build on."""
    from dagster import DagsterEventType, DagsterInstance

    from mltrain_assets.artifacts import filesystem
    from mltrain_assets.landing import hour_uri

    env, _ = pipeline_home
    bad_day = (dt.date.fromisoformat(DATE) - dt.timedelta(days=3)).isoformat()
    for hour in (3, 4):
        fs, path = filesystem(hour_uri(env["MLTRAIN_LANDING_URI"], "rides", bad_day, hour))
        fs.rm(path, recursive=True)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    versions_before = len(client.search_model_versions("name = 'demand-forecast-nyc'"))

    ingest = demo.execute("ride_events_job", "ride_events", partition_key=bad_day)
    assert not ingest.success
    assert f"rides {bad_day}: rule hourly_buckets_complete: missing hours [3, 4] (22/24 present)" in ingest.error
    assert "ride_events" not in ingest.materializations, "a rejected day commits nothing"
    retries = DagsterInstance.get().get_records_for_run(ingest.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
    assert retries.records == [], "bad data fails once"

    # Downstream still reads the day's last good version: nothing to rebuild, nothing new registered.
    features = demo.execute("demand_features_job", "features", partition_key=DATE)
    assert features.success, features.error
    assert features.materializations["city_demand_features"]["reused_committed_version"] is True
    city = demo.execute("demand_city_model_job", "nyc", partition_key=city_partition_key(DATE, "nyc"))
    assert demo.new_registrations([city]) == 0
    assert len(client.search_model_versions("name = 'demand-forecast-nyc'")) == versions_before
