"""Next-day forecasts from a registered model, scored against the day that then happened."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from mltrain_assets.artifacts import read_manifest, read_table
from mltrain_assets.pipelines.demand.contract import registered_model_name
from mltrain_assets.pipelines.demand.params import ForecastParams
from mltrain_assets.pipelines.demand.workloads.forecast import forecast_city
from mltrain_assets.workloads.common.params import MlflowSettings
from mltrain_assets.workloads.common.runtime import EXIT_DATA_REJECTED, DataRejected

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def registered(demand_world, trained_models) -> dict[str, str]:
    """city -> ``models:/demand-forecast-<city>/<version>`` with the alias ``staging`` set."""
    client = MlflowClient(demand_world.tracking_uri)
    uris = {}
    for city, summary in trained_models.items():
        version = mlflow.register_model(summary["mlflow_model_uri"], registered_model_name(city))
        client.set_registered_model_alias(registered_model_name(city), "staging", version.version)
        uris[city] = f"models:/{registered_model_name(city)}/{version.version}"
    return uris


def _actual_next_day(demand_world, city: str) -> pd.Series:
    next_day = max(demand_world.events)
    events = read_table(demand_world.events[next_day], "events.parquet").to_pandas()
    events = events[events.city == city]
    return events.groupby(events.requested_at.dt.floor("h")).size()


def test_forecasts_cover_the_next_day_and_track_what_happened(demand_world, registered):
    for city, model_uri in registered.items():
        out = demand_world.uri("demand_forecasts", city, "v=1")
        summary = forecast_city(model_uri, demand_world.features_uri, city, demand_world.date, out)
        forecasts = read_table(out, "forecasts.parquet").to_pandas()
        next_day = pd.Timestamp(demand_world.date, tz="UTC") + pd.Timedelta(days=1)
        assert forecasts.ts.tolist() == list(pd.date_range(next_day, periods=24, freq="h"))
        assert (forecasts.city == city).all() and (forecasts.model_uri == model_uri).all()
        assert (forecasts.forecast_rides > 0).all()
        assert summary["rows"] == 24 and summary["forecast_date"] == next_day.date().isoformat()
        assert summary["total_forecast"] == pytest.approx(forecasts.forecast_rides.sum())
        assert summary["model_uri"] == model_uri
        manifest = read_manifest(out)
        assert manifest["code_version"] == ForecastParams.code_version and manifest["summary"] == summary

        actual = _actual_next_day(demand_world, city).reindex(forecasts.ts).to_numpy()
        mape = float(np.mean(np.abs(actual - forecasts.forecast_rides.to_numpy()) / actual))
        assert mape < 0.2, (city, mape)
        assert abs(forecasts.forecast_rides.sum() / actual.sum() - 1) < 0.1


def test_an_alias_uri_scores_the_same_as_its_version(demand_world, registered):
    by_version = demand_world.uri("demand_forecasts", "austin", "v=1")
    if read_manifest(by_version) is None:
        forecast_city(registered["austin"], demand_world.features_uri, "austin", demand_world.date, by_version)
    by_alias = demand_world.uri("demand_forecasts", "austin", "v=alias")
    forecast_city(
        f"models:/{registered_model_name('austin')}@staging",
        demand_world.features_uri,
        "austin",
        demand_world.date,
        by_alias,
    )
    first = read_table(by_version, "forecasts.parquet").column("forecast_rides")
    second = read_table(by_alias, "forecasts.parquet").column("forecast_rides")
    assert first.equals(second)


def test_a_features_partition_without_scoring_rows_is_rejected(demand_world, registered, tmp_path):
    with pytest.raises(DataRejected, match=r"rule scoring_rows: 0 unlabelled rows for nyc"):
        forecast_city(registered["nyc"], demand_world.features_uri, "nyc", "2026-11-20", str(tmp_path / "out"))


@pytest.mark.slow
def test_cli_writes_the_forecast_version(demand_world, registered, tmp_path):
    """``python -m mltrain_assets.pipelines.demand.workloads.forecast --params JSON``; the registry comes from the params."""
    out = f"file://{tmp_path}/forecast"
    params = ForecastParams(
        date=demand_world.date,
        city="nyc",
        model_uri=registered["nyc"],
        features_uri=demand_world.features_uri,
        mlflow=MlflowSettings(tracking_uri=demand_world.tracking_uri),
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLTRAIN_MLFLOW_ARTIFACTS_URI")}

    def launch(p: ForecastParams) -> subprocess.CompletedProcess:
        return subprocess.run(p.command(sys.executable), capture_output=True, text=True, cwd=REPO, env=env, timeout=120)

    result = launch(params.with_output(out))
    assert result.returncode == 0, result.stderr
    assert read_manifest(out)["summary"]["rows"] == 24
    assert read_manifest(out)["producer"] == ForecastParams.module

    wrong_day = dataclasses.replace(params, date="2026-11-20", out_uri=f"{out}-wrong")
    result = launch(wrong_day)
    assert result.returncode == EXIT_DATA_REJECTED and "rule scoring_rows" in result.stderr
