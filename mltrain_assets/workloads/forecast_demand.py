"""Score ``demand_forecasts[D, city]``: next-day (``D+1``) hourly ride forecasts with a registered model.

``python -m mltrain_assets.workloads.forecast_demand --model-uri models:/demand-forecast-<city>/<version>
--features-uri URI --city C --date D --out-uri URI``

Loads the model with ``mlflow.lightgbm.load_model`` (a native LightGBM text model: nothing is
unpickled), scores the city's 24 unlabelled rows of ``city_demand_features[D]`` (the hours of
``D+1``), and commits ``forecasts.parquet`` (``city``, ``ts``, ``forecast_rides``, ``model_uri``).
Any model URI MLflow resolves works (``models:/name/3``, ``models:/name@staging``,
``models:/m-<id>``, ``runs:/<run>/model``).
"""

from __future__ import annotations

import argparse
import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa

from mltrain_assets.artifacts import ArtifactWriter
from mltrain_assets.schemas import UTC_TS
from mltrain_assets.workloads._runtime import DataRejected, Reporter, run_workload
from mltrain_assets.workloads.demand_config import FORECAST_CODE_VERSION
from mltrain_assets.workloads.demand_feature_sql import LABEL
from mltrain_assets.workloads.demand_features import read_features

PRODUCER = "mltrain_assets.workloads.forecast_demand"
FORECASTS_FILE = "forecasts.parquet"


def forecast_city(
    model_uri: str,
    features_uri: str,
    city: str,
    date: str,
    out_uri: str,
    reporter: Reporter | None = None,
) -> dict:
    """Forecast the 24 hours of ``date + 1`` for ``city`` and commit them; returns the summary."""
    import mlflow.lightgbm

    target_day = dt.date.fromisoformat(date) + dt.timedelta(days=1)
    frame = read_features(features_uri, city).to_pandas()
    start = pd.Timestamp(target_day, tz="UTC")
    rows = frame[(frame[LABEL].isna()) & (frame.ts >= start) & (frame.ts < start + pd.Timedelta(days=1))].sort_values(
        "ts"
    )
    if len(rows) != 24:
        raise DataRejected(
            f"partition {date}: rule scoring_rows: {len(rows)} unlabelled rows for {city} on {target_day} "
            f"in {features_uri} (expected 24)"
        )
    booster = mlflow.lightgbm.load_model(model_uri)
    wanted = booster.feature_name()
    missing = [name for name in wanted if name not in rows.columns]
    if missing:
        raise ValueError(
            f"model {model_uri} expects features the table at {features_uri} lacks "
            f"(did the features code change?): {missing[:10]}"
        )
    forecast = np.clip(booster.predict(rows[wanted], num_threads=1), 0.0, None)
    table = pa.table(
        {
            "city": pa.array([city] * len(rows), pa.string()),
            "ts": pa.array(rows.ts, UTC_TS),
            "forecast_rides": pa.array(forecast, pa.float64()),
            "model_uri": pa.array([model_uri] * len(rows), pa.string()),
        }
    )
    peak = int(np.argmax(forecast))
    summary = {
        "city": city,
        "date": date,
        "forecast_date": target_day.isoformat(),
        "rows": table.num_rows,
        "total_forecast": float(forecast.sum()),
        "peak_hour_utc": int(rows.ts.iloc[peak].hour),
        "peak_forecast": float(forecast[peak]),
        "model_uri": model_uri,
    }
    writer = ArtifactWriter(
        out_uri,
        producer=PRODUCER,
        code_version=FORECAST_CODE_VERSION,
        inputs={"model_uri": model_uri, "features": features_uri, "city": city},
    )
    writer.write_table(FORECASTS_FILE, table)
    writer.commit(summary)
    if reporter:
        reporter.info(
            f"{city} {target_day}: {summary['total_forecast']:.0f} rides forecast with {model_uri} -> {out_uri}"
        )
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mltrain_assets.workloads.forecast_demand", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model-uri", required=True, help="e.g. models:/demand-forecast-nyc/3")
    parser.add_argument("--features-uri", required=True, help="committed city_demand_features version")
    parser.add_argument("--city", required=True)
    parser.add_argument("--date", required=True, help="features partition D; forecasts cover D+1")
    parser.add_argument("--out-uri", required=True)
    return parser


def _body(args: argparse.Namespace, reporter: Reporter) -> dict:
    return forecast_city(args.model_uri, args.features_uri, args.city, args.date, args.out_uri, reporter)


def main() -> int:
    return run_workload("forecast_demand", _parser(), _body)


if __name__ == "__main__":
    raise SystemExit(main())
