"""Score ``demand_forecasts[D, city]``: next-day (``D+1``) hourly ride forecasts with a registered model.

``python -m mltrain_assets.pipelines.demand.workloads.forecast --params JSON`` (``ForecastParams``: ``date``,
``city``, ``model_uri`` such as ``models:/demand-forecast-<city>/<version>``, ``features_uri``,
``out_uri``, ``mlflow``).

Loads the model with ``mlflow.lightgbm.load_model`` (a native LightGBM text model: nothing is
unpickled), scores the city's 24 unlabelled rows of ``city_demand_features[D]`` (the hours of
``D+1``), and commits ``forecasts.parquet`` (``city``, ``ts``, ``forecast_rides``, ``model_uri``).
Any model URI MLflow resolves works (``models:/name/3``, ``models:/name@staging``,
``models:/m-<id>``, ``runs:/<run>/model``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from mltrain_assets.artifacts import ArtifactWriter
from mltrain_assets.pipelines.demand.params import ForecastParams
from mltrain_assets.pipelines.demand.workloads.feature_sql import LABEL
from mltrain_assets.pipelines.demand.workloads.features import read_features
from mltrain_assets.schemas import UTC_TS
from mltrain_assets.workloads.common.dates import shift
from mltrain_assets.workloads.common.runtime import DataRejected, Reporter, workload_main

PRODUCER = ForecastParams.module
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

    target_day = shift(date, 1)
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
        "forecast_date": target_day,
        "rows": table.num_rows,
        "total_forecast": float(forecast.sum()),
        "peak_hour_utc": int(rows.ts.iloc[peak].hour),
        "peak_forecast": float(forecast[peak]),
        "model_uri": model_uri,
    }
    writer = ArtifactWriter(
        out_uri,
        producer=PRODUCER,
        code_version=ForecastParams.code_version,
        inputs={"model_uri": model_uri, "features": features_uri, "city": city},
    )
    writer.write_table(FORECASTS_FILE, table)
    writer.commit(summary)
    if reporter:
        reporter.info(
            f"{city} {target_day}: {summary['total_forecast']:.0f} rides forecast with {model_uri} -> {out_uri}"
        )
    return summary


def run(params: ForecastParams, reporter: Reporter) -> dict:
    from mltrain_assets.workloads.common.tracking import use_tracking

    use_tracking(params.mlflow)  # the registry that resolves params.model_uri
    return forecast_city(params.model_uri, params.features_uri, params.city, params.date, params.out_uri, reporter)


main = workload_main(ForecastParams, run)

if __name__ == "__main__":
    raise SystemExit(main())
