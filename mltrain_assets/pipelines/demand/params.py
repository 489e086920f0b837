"""Parameters of the demand-forecasting workloads: built by the assets, parsed by the workloads."""

from __future__ import annotations

import dataclasses

from mltrain_assets.pipelines.demand import contract
from mltrain_assets.pipelines.demand.contract import EXPERIMENT_NAME
from mltrain_assets.workloads.common.params import MlflowSettings, WorkloadParams, input_uri, runtime, service, workload
from mltrain_assets.workloads.common.spark import SparkSettings

SQL_ENGINES = ("spark", "duckdb")


@workload(".workloads.aggregates", contract.AGGREGATES_CODE_VERSION, kinds={"spark", "sql"}, profile="spark")
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


@workload(".workloads.features", contract.FEATURES_CODE_VERSION, kinds={"spark", "sql"}, profile="spark")
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


@workload(".workloads.train", contract.TRAIN_CODE_VERSION, kinds={"lightgbm", "mlflow"}, profile="training")
@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainParams(CityModelParams):
    """One city's LightGBM demand model for one date, tracked in MLflow."""

    seed: int = 0
    experiment: str = runtime(default=EXPERIMENT_NAME)


@workload(".workloads.forecast", contract.FORECAST_CODE_VERSION, kinds={"lightgbm", "parquet"})
@dataclasses.dataclass(frozen=True, kw_only=True)
class ForecastParams(CityModelParams):
    """Next-day hourly forecasts for one city from a registered model version."""

    model_uri: str = input_uri(default="")  # models:/demand-forecast-<city>/<version>
