"""The typed contract between an asset and its workload: JSON round trips, named errors, versioned fields."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mltrain_assets.pipelines.demand.params import AggregatesParams, FeaturesParams, ForecastParams, TrainParams
from mltrain_assets.workloads.common.params import (
    MlflowSettings,
    WorkloadParams,
    hyperparameter_defaults,
    input_uri,
    runtime,
)
from mltrain_assets.workloads.common.spark import SparkSettings
from mltrain_assets.workloads.ingest.params import IngestParams

REPO = Path(__file__).resolve().parents[3]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExampleParams(WorkloadParams):
    """A params class exercising every conversion the JSON reader does."""

    module = "mltrain_assets.tests.example"

    rate: float = 1.0
    limit: int | None = None
    sizes: tuple[int, ...] = ()
    source: str = input_uri(default="")
    device: str = runtime(default="cpu")


FEATURES = FeaturesParams(
    date="2026-03-10",
    aggregates_uris=(
        "file:///data/city_hour_aggregates/2026-03-09/v=a",
        "file:///data/city_hour_aggregates/2026-03-10/v=b",
    ),
    engine="spark",
    spark=SparkSettings(
        master="spark://spark-master:7077",
        conf={"spark.executor.memory": "4g", "spark.executor.cores": "2"},
        s3a=True,
        driver_host="10.1.2.3",
    ),
    out_uri="file:///data/city_demand_features/2026-03-10/v=c",
)
TRAIN = TrainParams(
    date="2026-03-10",
    city="nyc",
    seed=7,
    features_uri="file:///data/city_demand_features/2026-03-10/v=c",
    experiment="demand-forecast-x",
    mlflow=MlflowSettings(tracking_uri="http://mlflow:5000", artifacts_uri="s3://mltrain/mlartifacts"),
    out_uri="file:///data/city_demand_model/2026-03-10/nyc/v=d",
)
FORECAST = ForecastParams(
    date="2026-03-10",
    city="nyc",
    model_uri="models:/demand-forecast-nyc/3",
    features_uri="file:///data/city_demand_features/2026-03-10/v=c",
    mlflow=MlflowSettings(tracking_uri="sqlite:///mlflow.db"),
)
AGGREGATES = AggregatesParams(
    rides_uris={"2026-03-10": "s3://mltrain/ride_events/2026-03-10/v=e"},
    targets={"2026-03-10": "s3://mltrain/city_hour_aggregates/2026-03-10/v=f"},
    engine="duckdb",
    parity=False,
)
INGEST = IngestParams(
    dataset="rides",
    landing_uri="s3://landing",
    targets={"2026-03-10": "s3://mltrain/ride_events/2026-03-10/v=e"},
)


@pytest.mark.parametrize("params", [FEATURES, AGGREGATES, TRAIN, FORECAST, INGEST], ids=lambda p: type(p).__name__)
def test_json_round_trip_gives_equal_params(params):
    again = type(params).from_json(params.to_json())
    assert again == params
    assert type(params).parse_args(params.argv()) == params
    assert params.command("/venv/bin/python") == ["/venv/bin/python", "-m", params.module, *params.argv()]


def test_nested_settings_and_tuples_come_back_typed():
    again = FeaturesParams.from_json(FEATURES.to_json())
    assert isinstance(again.spark, SparkSettings) and again.spark.conf == {
        "spark.executor.memory": "4g",
        "spark.executor.cores": "2",
    }
    assert isinstance(again.aggregates_uris, tuple)
    assert isinstance(TrainParams.from_json(TRAIN.to_json()).mlflow, MlflowSettings)
    # JSON holds a tuple as a list; an int where a float is declared becomes a float.
    example = ExampleParams.from_json('{"rate": 2, "limit": null, "sizes": [1, 2, 3]}')
    assert example == ExampleParams(rate=2.0, sizes=(1, 2, 3))
    assert isinstance(example.rate, float)
    assert ExampleParams.from_json(ExampleParams(limit=5).to_json()).limit == 5


def test_defaults_fill_what_the_json_leaves_out():
    params = FeaturesParams.from_json('{"date": "2026-03-10"}')
    assert params == FeaturesParams(date="2026-03-10")
    assert params.engine == "spark" and params.spark == SparkSettings() and params.aggregates_uris == ()


def test_unknown_fields_are_named():
    with pytest.raises(ValueError, match=r"FeaturesParams: unknown field\(s\) \['bogus'\]; expected \[") as error:
        FeaturesParams.from_json('{"date": "2026-03-10", "bogus": 1}')
    assert "'aggregates_uris'" in str(error.value)
    with pytest.raises(ValueError, match=r"FeaturesParams\.spark: unknown field\(s\) \['mastr'\]"):
        FeaturesParams.from_json('{"date": "2026-03-10", "spark": {"mastr": "local[2]"}}')
    with pytest.raises(ValueError, match=r"TrainParams\.mlflow: unknown field\(s\) \['uri'\]"):
        TrainParams.from_json('{"date": "2026-03-10", "city": "nyc", "mlflow": {"uri": "x"}}')


def test_missing_fields_are_named():
    with pytest.raises(ValueError, match=r"TrainParams: missing required field\(s\) \['city', 'date'\]"):
        TrainParams.from_json('{"seed": 1}')
    with pytest.raises(ValueError, match=r"IngestParams: missing required field\(s\) \['dataset', 'landing_uri'\]"):
        IngestParams.from_json("{}")


def test_params_that_are_not_a_json_object_are_refused():
    with pytest.raises(ValueError, match=r"ForecastParams: --params is not JSON"):
        ForecastParams.from_json("{date: 2026-03-10}")
    with pytest.raises(ValueError, match=r"ForecastParams: --params must be a JSON object, got list"):
        ForecastParams.from_json("[1, 2]")


def test_versioned_fields_leave_out_inputs_runtime_and_output():
    assert FEATURES.versioned_fields() == {"date": "2026-03-10"}
    assert AGGREGATES.versioned_fields() == {}  # each date's version hashes its ride_events version alone
    assert TRAIN.versioned_fields() == {
        "date": "2026-03-10",
        "city": "nyc",
        "seed": 7,
        **hyperparameter_defaults(TrainParams),  # hyperparameters are versioned: tuned, they make a new version
    }
    assert FORECAST.versioned_fields() == {"date": "2026-03-10", "city": "nyc"}
    assert INGEST.versioned_fields() == {"dataset": "rides"}
    assert ExampleParams(sizes=(1, 2)).versioned_fields() == {"rate": 1.0, "limit": None, "sizes": [1, 2]}
    # Where to read, run or write never changes the version.
    moved = dataclasses.replace(FEATURES, aggregates_uris=(), engine="duckdb", spark=SparkSettings())
    assert moved.with_output("file:///elsewhere").versioned_fields() == FEATURES.versioned_fields()
    assert json.loads(FEATURES.with_output("file:///x").to_json())["out_uri"] == "file:///x"


def test_the_cli_refuses_unknown_fields_naming_them():
    result = subprocess.run(
        [sys.executable, "-m", "mltrain_assets.pipelines.demand.workloads.features", "--params", '{"bogus":1}'],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode != 0
    assert "FeaturesParams: unknown field(s) ['bogus']" in result.stderr


def test_the_cli_requires_params():
    result = subprocess.run(
        [sys.executable, "-m", "mltrain_assets.pipelines.demand.workloads.forecast"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2 and "--params" in result.stderr


def test_a_committing_workload_refuses_to_start_without_its_version_folder():
    no_output = FeaturesParams(date="2026-03-10", aggregates_uris=("file:///x",))
    result = subprocess.run(
        [sys.executable, "-m", FeaturesParams.module, *no_output.argv()],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode != 0
    assert "FeaturesParams.out_uri is empty: the control plane names the version to commit" in result.stderr
    IngestParams(
        dataset="rides", landing_uri="file:///landing"
    ).require_output()  # commits one version per target instead


# ------------------------------------------------------------ hyperparameters


def test_training_hyperparameters_default_to_the_values_training_used_before_they_were_config():
    from mltrain_assets.pipelines.demand.workloads.train import lgb_params
    from mltrain_assets.pipelines.recsys import contract as recsys
    from mltrain_assets.pipelines.recsys.params import EmbeddingsParams
    from mltrain_assets.pipelines.recsys.params import TrainParams as RecsysTrainParams

    assert hyperparameter_defaults(TrainParams) == {
        "learning_rate": 0.05,
        "num_boost_round": 400,
        "num_leaves": 15,
        "min_data_in_leaf": 10,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
    }
    # Without launch config, LightGBM gets exactly what it got when these were constants.
    assert lgb_params(7) == (
        {
            "objective": "poisson",
            "learning_rate": 0.05,
            "num_leaves": 15,
            "min_data_in_leaf": 10,
            "feature_fraction": 0.8,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "extra_trees": True,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": 1,
            "verbose": -1,
            "seed": 7,
        },
        400,
    )
    assert hyperparameter_defaults(RecsysTrainParams) == {
        "epochs": recsys.TRAIN_EPOCHS,
        "batch_size": recsys.TRAIN_BATCH_SIZE,
        "lr": recsys.TRAIN_LR,
        "weight_decay": recsys.TRAIN_WEIGHT_DECAY,
        "hidden_width": recsys.HIDDEN_SIZES[0],
    }
    assert set(hyperparameter_defaults(EmbeddingsParams)) == {"rank", "iterations", "reg", "alpha", "negative_weight"}


def test_hyperparameters_are_versioned_and_a_tuned_one_changes_the_version_fields():
    default = TrainParams(date="2026-03-10", city="nyc")
    tuned = dataclasses.replace(default, learning_rate=0.1)
    assert default.versioned_fields()["learning_rate"] == 0.05
    assert tuned.versioned_fields() != default.versioned_fields()


def test_a_hyperparameter_out_of_range_is_refused_naming_field_and_value():
    """Wherever params are built: the control plane's launch config, or a pod parsing --params."""
    with pytest.raises(ValueError, match=r"^TrainParams\.learning_rate=1\.5 is out of range: must be > 0, <= 1$"):
        TrainParams(date="2026-03-10", city="nyc", learning_rate=1.5)
    text = TrainParams(date="2026-03-10", city="nyc").to_json().replace('"num_leaves":15', '"num_leaves":1')
    with pytest.raises(ValueError, match=r"^TrainParams\.num_leaves=1 is out of range: must be >= 2, <= 4096$"):
        TrainParams.from_json(text)


def test_a_hyperparameter_declares_only_known_bounds():
    from mltrain_assets.workloads.common.params import hyperparameter

    with pytest.raises(TypeError, match=r"unknown bound\(s\) \['maximum'\]"):
        hyperparameter(default=1, help="x", maximum=3)
