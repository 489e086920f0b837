"""Parameters of the demand-forecasting workloads: built by the assets, parsed by the workloads."""

from __future__ import annotations

import dataclasses

from mltrain_assets.pipelines.demand.contract import EXPERIMENT_NAME
from mltrain_assets.sdk import (
    MlflowSettings,
    SparkSettings,
    WorkloadParams,
    hyperparameter,
    input_uri,
    runtime,
    service,
    workload,
)

SQL_ENGINES = ("spark", "duckdb")


@workload(".workloads.aggregates", kinds={"spark", "sql"}, profile="spark")
@dataclasses.dataclass(frozen=True, kw_only=True)
class AggregatesParams(WorkloadParams):
    """City-hour aggregates of one or more days of ride_events, one version per date (each raw day read once)."""

    commits = False  # commits one version per entry of targets

    rides_uris: dict[str, str] = input_uri(default_factory=dict)  # {date: committed ride_events version}
    engine: str = service("sql_engine", default="spark")  # "spark" | "duckdb": same SQL text, same numbers
    parity: bool = service(
        "engine_parity", default=True
    )  # recompute a sample on the other engine (the engine_parity gate)
    spark: SparkSettings = service("spark", default_factory=SparkSettings)
    # {date: version folder to commit}: one launch aggregates every date of a range not yet committed.
    targets: dict[str, str] = dataclasses.field(default_factory=dict, metadata={"versioned": False, "role": "output"})


@workload(".workloads.features", kinds={"spark", "sql"}, profile="spark")
@dataclasses.dataclass(frozen=True, kw_only=True)
class FeaturesParams(WorkloadParams):
    """~200 features per city-hour for one date from a trailing window of city-hour aggregates."""

    date: str
    aggregates_uris: tuple[str, ...] = input_uri(default=())
    engine: str = service("sql_engine", default="spark")  # "spark" | "duckdb": same SQL text, same numbers
    parity: bool = service("engine_parity", default=True)  # recompute on the other engine (the engine_parity gate)
    spark: SparkSettings = service("spark", default_factory=SparkSettings)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CityModelParams(WorkloadParams):
    """What training and forecasting share: one city and date, that date's features, the MLflow store."""

    date: str
    city: str
    features_uri: str = input_uri(default="")
    mlflow: MlflowSettings = service("mlflow", default_factory=MlflowSettings)


@workload(
    ".workloads.train",
    kinds={"lightgbm", "mlflow"},
    profile="training",
    resources={"memory": "16Gi", "shm": "", "timeout_s": 1800},  # LightGBM, one city, CPU: not the GPU trainer
)
@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainParams(CityModelParams):
    """One city's LightGBM demand model for one date, tracked in MLflow."""

    seed: int = 0
    experiment: str = runtime(default=EXPERIMENT_NAME)
    # LightGBM's tunables (the rest of its parameters keep training deterministic: workloads.train.LGB_PARAMS).
    learning_rate: float = hyperparameter(default=0.05, help="LightGBM shrinkage per boosting round", gt=0, le=1)
    num_boost_round: int = hyperparameter(default=400, help="boosting rounds (trees)", ge=1, le=10_000)
    num_leaves: int = hyperparameter(default=15, help="maximum leaves per tree", ge=2, le=4096)
    min_data_in_leaf: int = hyperparameter(default=10, help="minimum training rows per leaf", ge=1)
    feature_fraction: float = hyperparameter(default=0.8, help="share of features each tree sees", gt=0, le=1)
    bagging_fraction: float = hyperparameter(default=0.8, help="share of rows each round samples", gt=0, le=1)


@workload(".workloads.forecast", kinds={"lightgbm", "parquet"}, resources={"timeout_s": 900})
@dataclasses.dataclass(frozen=True, kw_only=True)
class ForecastParams(CityModelParams):
    """Next-day hourly forecasts for one city from a registered model version."""

    model_uri: str = input_uri(default="")  # models:/demand-forecast-<city>/<version>
