"""Per-city LightGBM training on simulated rides: accuracy, MLflow logging, determinism."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.lightgbm
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mltrain_assets.artifacts import read_bytes, read_json, read_manifest, read_table
from mltrain_assets.pipelines.demand.contract import HOLDOUT_DAYS, MAPE_THRESHOLD
from mltrain_assets.pipelines.demand.params import TrainParams
from mltrain_assets.pipelines.demand.workloads.feature_sql import FEATURE_NAMES
from mltrain_assets.pipelines.demand.workloads.features import read_features
from mltrain_assets.pipelines.demand.workloads.train import FORECAST_FIGURE, split_rows, train_city
from mltrain_assets.workloads.common.params import MlflowSettings

REPO = Path(__file__).resolve().parents[3]


def test_models_beat_the_mape_gate_and_the_naive_forecast_does_not(trained_models):
    for city, summary in trained_models.items():
        assert summary["mape"] < MAPE_THRESHOLD, (city, summary["mape"])
        assert summary["naive_mape"] > MAPE_THRESHOLD, (city, summary["naive_mape"])
        assert summary["mape"] < summary["naive_mape"] / 2
        assert summary["mape_ok"] is True
        assert summary["n_holdout"] == HOLDOUT_DAYS * 24
        assert summary["wape"] < MAPE_THRESHOLD and summary["rmse"] > 0


def test_the_holdout_is_the_last_days_and_training_rows_precede_it(demand_world):
    frame = read_features(demand_world.features_uri, "nyc").to_pandas()
    train, holdout = split_rows(frame, demand_world.date)
    assert holdout.ts.dt.date.astype(str).nunique() == HOLDOUT_DAYS
    assert holdout.ts.dt.date.astype(str).max() == demand_world.date
    assert train.ts.max() < holdout.ts.min()
    assert train.demand.notna().all() and holdout.demand.notna().all()


def test_the_run_is_logged_to_mlflow_with_metrics_tags_inputs_and_model(demand_world, trained_models):
    client = MlflowClient(demand_world.tracking_uri)
    summary = trained_models["nyc"]
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.run_name == f"demand-nyc-{demand_world.date}"
    assert run.data.tags["mltrain.city"] == "nyc"
    assert run.data.tags["mltrain.date"] == demand_world.date
    # Trained outside Dagster: no partition key, no Dagster run, no links (nothing made up).
    assert not {"mltrain.partition", "mltrain.dagster_run_id", "mltrain.dagster_run_url"} & set(run.data.tags)
    assert run.data.tags["mltrain.features_uri"] == demand_world.features_uri
    assert run.data.metrics["mape"] == pytest.approx(summary["mape"])
    assert run.data.metrics["naive_mape"] == pytest.approx(summary["naive_mape"])
    # One value per metric: no duplicate point that would draw a curve from step 0.
    for key in run.data.metrics:
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0], key
    assert run.data.params["objective"] == "poisson" and run.data.params["deterministic"] == "True"
    contexts = {
        tag.value for dataset in run.inputs.dataset_inputs for tag in dataset.tags if tag.key == "mlflow.data.context"
    }
    assert contexts == {"training", "holdout"}
    assert {d.dataset.source_type for d in run.inputs.dataset_inputs} == {"local"}
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "demand-forecast"

    # The logged model is the LightGBM flavor, loads without unpickling, and predicts like model.txt.
    assert summary["mlflow_model_uri"].startswith("models:/m-")
    booster = mlflow.lightgbm.load_model(summary["mlflow_model_uri"])
    assert booster.feature_name() == FEATURE_NAMES
    holdout = read_table(demand_world.uri("city_demand_model", "nyc", "v=1"), "holdout.parquet").to_pandas()
    frame = read_features(demand_world.features_uri, "nyc").to_pandas()
    _, rows = split_rows(frame, demand_world.date)
    assert np.allclose(booster.predict(rows[FEATURE_NAMES]), holdout.forecast.to_numpy())
    import lightgbm as lgb

    native = lgb.Booster(
        model_str=read_bytes(demand_world.uri("city_demand_model", "nyc", "v=1"), "model.txt").decode()
    )
    assert np.allclose(native.predict(rows[FEATURE_NAMES]), holdout.forecast.to_numpy())

    # The URI in the summary is what registration takes.
    version = mlflow.register_model(summary["mlflow_model_uri"], "demand-forecast-test-registration")
    assert str(version.version) == "1" and version.run_id == summary["mlflow_run_id"]


def test_the_run_carries_the_holdout_forecast_figure_as_a_png(demand_world, trained_models, tmp_path):
    from PIL import Image

    client = MlflowClient(demand_world.tracking_uri)
    for city, summary in trained_models.items():
        run_id = summary["mlflow_run_id"]  # the run a registered version of this model points to
        assert [a.path for a in client.list_artifacts(run_id, "figures")] == [FORECAST_FIGURE], city
        local = client.download_artifacts(run_id, FORECAST_FIGURE, str(tmp_path / city))
        with Image.open(local) as image:
            assert image.format == "PNG" and image.width > 600 and image.height > 200, (city, image.size)
            image.verify()


def test_the_output_version_holds_model_metrics_and_importances(demand_world, trained_models):
    out = demand_world.uri("city_demand_model", "austin", "v=1")
    manifest = read_manifest(out)
    assert manifest["code_version"] == TrainParams.code_version
    assert set(manifest["files"]) == {"model.txt", "metrics.json", "feature_importance.json", "holdout.parquet"}
    assert manifest["summary"] == trained_models["austin"]
    metrics = read_json(out, "metrics.json")
    assert metrics["mape"] == trained_models["austin"]["mape"]
    importance = read_json(out, "feature_importance.json")
    assert [item["feature"] for item in importance[:5]] == trained_models["austin"]["top_features"]
    assert {item["feature"] for item in importance} == set(FEATURE_NAMES)
    assert importance[0]["gain"] > 0


def test_training_twice_gives_the_same_model_file(demand_world, trained_models):
    again = demand_world.uri("city_demand_model", "austin", "v=again")
    summary = train_city(demand_world.features_uri, "austin", demand_world.date, again)
    first = read_manifest(demand_world.uri("city_demand_model", "austin", "v=1"))
    assert read_manifest(again)["files"]["model.txt"]["sha256"] == first["files"]["model.txt"]["sha256"]
    assert summary["mape"] == trained_models["austin"]["mape"]
    assert summary["mlflow_run_id"] != trained_models["austin"]["mlflow_run_id"]


@pytest.mark.slow
def test_the_entry_point_tracks_where_its_params_say_not_where_the_environment_does(demand_world, trained_models):
    """The tracking store and experiment travel in ``TrainParams``: a pod's environment has neither."""
    out = demand_world.uri("city_demand_model", "austin", "v=cli")
    params = TrainParams(
        date=demand_world.date,
        city="austin",
        features_uri=demand_world.features_uri,
        experiment="demand-forecast-params",
        mlflow=MlflowSettings(
            tracking_uri=demand_world.tracking_uri,
            artifacts_uri=demand_world.uri("mlartifacts-params"),
            dagster_ui_url="http://dagster.example:3000/",
            dagster_run_id="0a1b2c3d-run",
            dagster_asset_key="city_demand_model",
            dagster_partition_key=f"austin|{demand_world.date}",
        ),
    ).with_output(out)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLTRAIN_MLFLOW_ARTIFACTS_URI")}
    result = subprocess.run(
        params.command(sys.executable), capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    summary = read_manifest(out)["summary"]
    assert summary["mape"] == trained_models["austin"]["mape"]
    run = MlflowClient(demand_world.tracking_uri).get_run(summary["mlflow_run_id"])
    experiment = MlflowClient(demand_world.tracking_uri).get_experiment(run.info.experiment_id)
    assert experiment.name == "demand-forecast-params"
    assert experiment.artifact_location.startswith(demand_world.uri("mlartifacts-params"))
    # Launched for a Dagster run: the run links back to it and to the asset partition it built.
    tags = run.data.tags
    assert tags["mltrain.partition"] == f"austin|{demand_world.date}" and tags["mltrain.date"] == demand_world.date
    assert tags["mltrain.dagster_run_id"] == "0a1b2c3d-run"
    assert tags["mltrain.dagster_run_url"] == "http://dagster.example:3000/runs/0a1b2c3d-run"
    assert tags["mltrain.dagster_asset_url"] == (
        f"http://dagster.example:3000/assets/city_demand_model?view=partitions&partition=austin%7C{demand_world.date}"
    )


def test_tuned_hyperparameters_train_the_model_and_reach_mlflow_params(demand_world, trained_models):
    """A learning rate set as launch config arrives in ``TrainParams``: the booster uses it, MLflow records it."""
    from mltrain_assets.pipelines.demand.workloads.train import run
    from mltrain_assets.workloads.common.runtime import Reporter

    out = demand_world.uri("city_demand_model", "austin", "v=tuned")
    params = TrainParams(
        date=demand_world.date,
        city="austin",
        features_uri=demand_world.features_uri,
        mlflow=MlflowSettings(tracking_uri=demand_world.tracking_uri, artifacts_uri=demand_world.uri("mlartifacts")),
        learning_rate=0.2,
        num_boost_round=60,
    ).with_output(out)
    summary = run(params, Reporter("test", None))
    logged = MlflowClient(demand_world.tracking_uri).get_run(summary["mlflow_run_id"]).data.params
    assert logged["learning_rate"] == "0.2" and logged["num_boost_round"] == "60"
    assert logged["num_leaves"] == "15", "untuned hyperparameters keep their defaults"
    first = read_manifest(demand_world.uri("city_demand_model", "austin", "v=1"))
    assert read_manifest(out)["files"]["model.txt"]["sha256"] != first["files"]["model.txt"]["sha256"]
    assert read_manifest(out)["code_version"] == TrainParams.code_version
    text = read_bytes(out, "model.txt").decode()
    assert "[learning_rate: 0.2]" in text and "[num_iterations: 60]" in text
