"""Train ``city_demand_model[D, city]``: a LightGBM demand forecaster for one city, logged to MLflow.

``python -m mltrain_assets.pipelines.demand.workloads.train --params JSON`` (``TrainParams``: ``date``, ``city``,
``seed``, ``features_uri``, ``out_uri``, ``experiment``, ``mlflow``).

- Rows: the city's labelled rows of ``city_demand_features[D]``; the last ``HOLDOUT_DAYS`` days
  (``D-HOLDOUT_DAYS+1 .. D``) are the holdout, the days before are the training rows.
- Model: LightGBM, Poisson objective (counts; multiplicative effects), randomized split thresholds
  (``extra_trees``: steadier on a few weeks of rows), deterministic: ``deterministic=True``,
  ``force_row_wise=True``, fixed seeds, ``num_threads=1`` (two cities train side by side on two
  cores). The same inputs and seed give a byte-identical ``model.txt``.
- Metrics on the holdout: ``mape`` (rows with demand > 0), ``naive_mape`` (the "same hour
  yesterday" forecast, ``demand_lag_24h``), ``wape``, ``rmse``, ``naive_wape``, ``n_train``,
  ``n_holdout``.
- MLflow (the tracking store the params' ``MlflowSettings`` name; MLflow's default when empty):
  run ``demand-<city>-<date>`` in the params' experiment, tags ``mltrain.city`` / ``mltrain.date`` /
  ``mltrain.features_uri`` and, launched by Dagster, ``mltrain.partition`` (``<city>|<date>``),
  ``mltrain.dagster_run_id`` and links to the Dagster run and asset partition
  (``mltrain.dagster_run_url``, ``mltrain.dagster_asset_url``); params, metrics (one value
  each, no curves), the training and holdout datasets (``mlflow.log_input``), the model with
  the lightgbm flavor (a native LightGBM text model, never a pickle) with signature and input
  example, and the figure a reviewer opens first: ``figures/holdout_forecast.png``, the holdout
  week's hourly demand against the model's and the naive forecast (``FORECAST_FIGURE``).
- Output version: ``model.txt`` (LightGBM native), ``metrics.json``, ``feature_importance.json``,
  ``holdout.parquet`` (city, ts, demand, forecast, naive). The summary carries
  ``mlflow_model_uri``: the ``models:/m-<model id>`` URI MLflow 3 returns for the logged model,
  accepted by ``mlflow.register_model(uri, name)`` (``mlflow_run_model_uri`` is the equivalent
  ``runs:/<run id>/model``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa

from mltrain_assets.artifacts import ArtifactWriter
from mltrain_assets.pipelines.demand.contract import (
    EXPERIMENT_NAME,
    HOLDOUT_DAYS,
    HOLDOUT_WINDOW,
    MAPE_THRESHOLD,
)
from mltrain_assets.pipelines.demand.params import TrainParams
from mltrain_assets.pipelines.demand.workloads.feature_sql import FEATURE_NAMES, LABEL, NAIVE_FEATURE
from mltrain_assets.pipelines.demand.workloads.features import read_features
from mltrain_assets.schemas import UTC_TS
from mltrain_assets.workloads.common.params import hyperparameter_defaults, hyperparameter_values
from mltrain_assets.workloads.common.runtime import DataRejected, Reporter, workload_main

PRODUCER = TrainParams.module
MODEL_FILE = "model.txt"
METRICS_FILE = "metrics.json"
IMPORTANCE_FILE = "feature_importance.json"
HOLDOUT_FILE = "holdout.parquet"
MLFLOW_MODEL_NAME = "model"
# The run's artifact a reviewer opens first: forecast vs actual over the holdout week.
FORECAST_FIGURE = "figures/holdout_forecast.png"
MIN_TRAIN_DAYS = 7
# LightGBM's fixed parameters: the objective and what keeps training deterministic. The tunable ones
# (learning rate, rounds, leaves, ...) are TrainParams' hyperparameters: launch config of the asset.
LGB_PARAMS = {
    "objective": "poisson",
    "bagging_freq": 1,
    "extra_trees": True,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 1,
    "verbose": -1,
}


def lgb_params(seed: int, tuned: Mapping[str, Any] | None = None) -> tuple[dict, int]:
    """LightGBM's parameters and its boosting rounds: the fixed ones, the hyperparameters (``tuned``, else
    ``TrainParams``' defaults) and the seed."""
    settings = {**hyperparameter_defaults(TrainParams), **(tuned or {})}
    rounds = int(settings.pop("num_boost_round"))
    return {**LGB_PARAMS, **settings, "seed": seed}, rounds


def _mape(actual: np.ndarray, forecast: np.ndarray) -> float:
    mask = np.isfinite(forecast) & (actual > 0)
    return float(np.mean(np.abs(actual[mask] - forecast[mask]) / actual[mask])) if mask.any() else float("nan")


def _wape(actual: np.ndarray, forecast: np.ndarray) -> float:
    mask = np.isfinite(forecast)
    return float(np.sum(np.abs(actual[mask] - forecast[mask])) / max(np.sum(actual[mask]), 1e-9))


def split_rows(frame: pd.DataFrame, date: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, holdout rows): the holdout is the labelled rows of the last ``HOLDOUT_DAYS`` days."""
    holdout_start = pd.Timestamp(HOLDOUT_WINDOW.first(date), tz="UTC")
    labelled = frame[frame[LABEL].notna()].sort_values("ts")
    return labelled[labelled.ts < holdout_start], labelled[labelled.ts >= holdout_start]


@dataclass(frozen=True)
class _Holdout:
    """The holdout's actual demand, the model's and the naive forecasts, and the metrics comparing them."""

    actual: np.ndarray
    forecast: np.ndarray
    naive: np.ndarray
    metrics: dict


@dataclass(frozen=True)
class _Fit:
    """One city's fitted model: its LightGBM params and rounds, the booster, its rows and how it did on the holdout."""

    params: dict
    rounds: int
    booster: lgb.Booster
    train: pd.DataFrame
    holdout: pd.DataFrame
    evaluated: _Holdout


@dataclass(frozen=True)
class _Logged:
    """Where MLflow keeps the run and its logged model."""

    run_id: str
    experiment_id: str
    model_info: Any


def _training_rows(features_uri: str, city: str, date: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The city's (training, holdout) rows; rejects too few training days or an empty holdout."""
    frame = read_features(features_uri, city).to_pandas()
    train, holdout = split_rows(frame, date)
    if train.ts.dt.date.nunique() < MIN_TRAIN_DAYS:
        raise DataRejected(
            f"partition {date}: rule min_train_days: city {city} has {train.ts.dt.date.nunique()} training days "
            f"in {features_uri} (need {MIN_TRAIN_DAYS})"
        )
    if holdout.empty:
        raise DataRejected(
            f"partition {date}: rule holdout_rows: city {city} has no labelled rows in the last {HOLDOUT_DAYS} days"
        )
    return train, holdout


def _fit_booster(params: dict, rounds: int, train: pd.DataFrame) -> lgb.Booster:
    dataset = lgb.Dataset(train[FEATURE_NAMES], label=train[LABEL], feature_name=FEATURE_NAMES, free_raw_data=False)
    return lgb.train(params, dataset, num_boost_round=rounds)


def _evaluate(booster: lgb.Booster, train: pd.DataFrame, holdout: pd.DataFrame) -> _Holdout:
    """Forecast the holdout; the model's and the naive forecast's errors."""
    forecast = booster.predict(holdout[FEATURE_NAMES], num_threads=1)
    actual = holdout[LABEL].to_numpy(dtype=float)
    naive = holdout[NAIVE_FEATURE].to_numpy(dtype=float)
    metrics = {
        "mape": _mape(actual, forecast),
        "naive_mape": _mape(actual, naive),
        "wape": _wape(actual, forecast),
        "naive_wape": _wape(actual, naive),
        "rmse": float(np.sqrt(np.mean((actual - forecast) ** 2))),
        "n_train": len(train),
        "n_holdout": len(holdout),
    }
    return _Holdout(actual, forecast, naive, metrics)


def _feature_importance(booster: lgb.Booster) -> list[dict]:
    """Each feature's total gain and split count, most gain first."""
    gain = booster.feature_importance("gain")
    splits = booster.feature_importance("split")
    return sorted(
        (
            {"feature": n, "gain": float(g), "splits": int(s)}
            for n, g, s in zip(FEATURE_NAMES, gain, splits, strict=True)
        ),
        key=lambda item: (-item["gain"], item["feature"]),
    )


def _log_datasets(train: pd.DataFrame, holdout: pd.DataFrame, features_uri: str, city: str, date: str) -> None:
    """Log the training and holdout rows as the run's inputs (``mlflow.log_input``)."""
    import mlflow

    for context, rows in (("training", train), ("holdout", holdout)):
        with warnings.catch_warnings():
            # A file:// source matches two equivalent local source types; MLflow picks one and warns.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            dataset = mlflow.data.from_pandas(
                rows[["ts", *FEATURE_NAMES, LABEL]].reset_index(drop=True),
                source=features_uri,
                name=f"city_demand_features-{city}-{date}-{context}",
                targets=LABEL,
            )
        mlflow.log_input(dataset, context=context)


def holdout_figure(city: str, date: str, ts: pd.Series, evaluated: _Holdout):
    """The holdout week hour by hour: actual demand, the model's forecast and the naive one (Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 3.6), dpi=90, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    hours = pd.to_datetime(ts).dt.tz_localize(None).to_numpy()
    metrics = evaluated.metrics
    ax.plot(hours, evaluated.actual, color="black", linewidth=1.2, label="actual")
    ax.plot(hours, evaluated.forecast, color="tab:blue", linewidth=1.2, label=f"forecast (MAPE {metrics['mape']:.3f})")
    ax.plot(
        hours, evaluated.naive, color="tab:gray", linewidth=0.8, linestyle="--",
        label=f"naive: same hour yesterday (MAPE {metrics['naive_mape']:.3f})",
    )  # fmt: skip
    ax.set_title(f"demand-forecast-{city}, partition {date}: holdout week, rides per hour (UTC)", fontsize=10)
    ax.set_ylabel("rides per hour")
    ax.grid(alpha=0.3)
    # Below the axes: a day's peak fills the plot's upper corners.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=8, frameon=False)
    return figure


def _log_model(booster: lgb.Booster, train: pd.DataFrame):
    """Log the booster with the lightgbm flavor, its signature and an input example; MLflow's model info."""
    import mlflow.lightgbm
    from mlflow.models import infer_signature

    example = train[FEATURE_NAMES].head(5).reset_index(drop=True)
    return mlflow.lightgbm.log_model(
        booster,
        name=MLFLOW_MODEL_NAME,
        signature=infer_signature(example, booster.predict(example, num_threads=1)),
        input_example=example,
        # Explicit requirements: inferring them would load the model in a subprocess.
        pip_requirements=[f"lightgbm=={lgb.__version__}", f"pandas=={pd.__version__}", f"numpy=={np.__version__}"],
    )


def _log_run(
    fit: _Fit,
    *,
    experiment: str,
    city: str,
    date: str,
    features_uri: str,
    out_uri: str,
    run_tags: Mapping[str, str] | None,
) -> _Logged:
    """One MLflow run in ``experiment``: tags, params, metrics, the datasets, the model and its holdout figure."""
    import mlflow

    from mltrain_assets.workloads.common.tracking import ensure_experiment

    ensure_experiment(experiment)
    with mlflow.start_run(run_name=f"demand-{city}-{date}") as run:
        mlflow.set_tags(
            {
                "mltrain.city": city,
                "mltrain.date": date,
                "mltrain.features_uri": features_uri,
                "mltrain.out_uri": out_uri,
                "mltrain.code_version": TrainParams.code_version,
                **(run_tags or {}),
            }
        )
        mlflow.log_params(
            {
                **{k: v for k, v in fit.params.items() if k != "verbose"},
                "num_boost_round": fit.rounds,
                "n_features": len(FEATURE_NAMES),
                "holdout_days": HOLDOUT_DAYS,
                "city": city,
            }
        )
        mlflow.log_metrics(fit.evaluated.metrics)
        _log_datasets(fit.train, fit.holdout, features_uri, city, date)
        info = _log_model(fit.booster, fit.train)
        mlflow.log_figure(holdout_figure(city, date, fit.holdout.ts, fit.evaluated), FORECAST_FIGURE)
        return _Logged(run.info.run_id, run.info.experiment_id, info)


def _summary(city: str, date: str, seed: int, metrics: dict, importance: list[dict], logged: _Logged) -> dict:
    """The summary committed with the model's version: metrics, the MAPE gate, where MLflow has it."""
    return {
        "city": city,
        "date": date,
        **{k: metrics[k] for k in ("mape", "naive_mape", "wape", "naive_wape", "rmse", "n_train", "n_holdout")},
        "mape_threshold": MAPE_THRESHOLD,
        "mape_ok": bool(metrics["mape"] < MAPE_THRESHOLD),
        "mlflow_run_id": logged.run_id,
        "mlflow_experiment_id": logged.experiment_id,
        "mlflow_model_uri": logged.model_info.model_uri,
        "mlflow_model_id": getattr(logged.model_info, "model_id", None),
        "mlflow_run_model_uri": f"runs:/{logged.run_id}/{MLFLOW_MODEL_NAME}",
        "n_features": len(FEATURE_NAMES),
        "top_features": [item["feature"] for item in importance[:5]],
        "seed": seed,
    }


def _holdout_table(city: str, holdout: pd.DataFrame, evaluated: _Holdout) -> pa.Table:
    """``holdout.parquet``: city, ts, demand, forecast, naive."""
    return pa.table(
        {
            "city": pa.array([city] * len(holdout), pa.string()),
            "ts": pa.array(holdout.ts, UTC_TS),
            "demand": pa.array(evaluated.actual),
            "forecast": pa.array(evaluated.forecast),
            "naive": pa.array(evaluated.naive),
        }
    )


def train_city(
    features_uri: str,
    city: str,
    date: str,
    out_uri: str,
    experiment: str = EXPERIMENT_NAME,
    seed: int = 0,
    reporter: Reporter | None = None,
    run_tags: Mapping[str, str] | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
) -> dict:
    """Train, evaluate, log to MLflow and commit one city's model; returns the summary.

    ``run_tags``: extra MLflow run tags (the Dagster launch's id, partition and links);
    ``hyperparameters``: ``TrainParams``' hyperparameter fields (their defaults when not given).
    """
    train, holdout = _training_rows(features_uri, city, date)
    if reporter:
        reporter.info(
            f"{city} {date}: {len(train)} training rows, {len(holdout)} holdout rows, {len(FEATURE_NAMES)} features"
        )

    params, rounds = lgb_params(seed, hyperparameters)
    booster = _fit_booster(params, rounds, train)
    evaluated = _evaluate(booster, train, holdout)
    metrics = evaluated.metrics
    importance = _feature_importance(booster)
    if reporter:
        reporter.info(f"{city} {date}: holdout MAPE {metrics['mape']:.3f} (naive {metrics['naive_mape']:.3f})")

    fit = _Fit(params, rounds, booster, train, holdout, evaluated)
    logged = _log_run(
        fit, experiment=experiment, city=city, date=date, features_uri=features_uri, out_uri=out_uri, run_tags=run_tags
    )
    summary = _summary(city, date, seed, metrics, importance, logged)
    writer = ArtifactWriter(
        out_uri,
        producer=PRODUCER,
        code_version=TrainParams.code_version,
        inputs={"features": features_uri, "city": city, "seed": seed},
    )
    writer.write_bytes(MODEL_FILE, booster.model_to_string().encode())
    writer.write_json(METRICS_FILE, metrics)
    writer.write_json(IMPORTANCE_FILE, importance)
    writer.write_table(HOLDOUT_FILE, _holdout_table(city, holdout, evaluated))
    writer.commit(summary)
    if reporter:
        reporter.info(f"{city} {date}: model {logged.model_info.model_uri} (run {logged.run_id}) -> {out_uri}")
    return summary


def run(params: TrainParams, reporter: Reporter) -> dict:
    from mltrain_assets.workloads.common.tracking import run_tags, use_tracking

    use_tracking(params.mlflow)  # train_city selects (creating if needed) params.experiment in that store
    return train_city(
        params.features_uri,
        params.city,
        params.date,
        params.out_uri,
        params.experiment,
        params.seed,
        reporter,
        run_tags=run_tags(params.mlflow),
        hyperparameters=hyperparameter_values(params),
    )


main = workload_main(TrainParams, run)

if __name__ == "__main__":
    raise SystemExit(main())
