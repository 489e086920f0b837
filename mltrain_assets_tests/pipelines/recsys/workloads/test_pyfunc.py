"""The recommender in MLflow: a pyfunc logged from code, with a signature, weights only, loadable by URI.

A small untrained network (no Spark, no torchrun) is enough to check the packaging; the trained
model goes through the same path in ``train/test_launcher.py``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import mlflow
import mlflow.models
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mltrain_assets.pipelines.recsys.workloads.evaluate import model_directory
from mltrain_assets.pipelines.recsys.workloads.model import (
    INPUT_COLUMNS,
    MODEL_FILES,
    OUTPUT_COLUMN,
    RecsysNet,
    default_config,
    load_model_dir,
    save_model_dir,
    score,
)
from mltrain_assets.pipelines.recsys.workloads.train.tracking import log_pyfunc_model
from mltrain_assets.resources.tracking import ModelRegistry

RANK = 4
IMPRESSIONS = pd.DataFrame(
    {
        "user_id": [1, 2, 10**12],  # the last one never seen: a cold start
        "item_id": [3, 10**12, 5],
        "device": ["ios", "web", "android"],
        "position": [0, 4, 30],
        "hour": [20.0, 7.5, 0.0],
    }
)


def _factors(column: str, n: int, rng: np.random.Generator) -> pa.Table:
    return pa.table(
        {
            column: pa.array(np.arange(1, n + 1), pa.int64()),
            "factors": pa.array([rng.normal(size=RANK).astype(np.float32).tolist() for _ in range(n)]),
            "impressions": pa.array(rng.integers(1, 100, n), pa.int64()),
            "clicks": pa.array(rng.integers(0, 5, n), pa.int64()),
        }
    )


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A model directory, its pyfunc logged in a sqlite store, and a run holding it the old way (raw files)."""
    root = tmp_path_factory.mktemp("pyfunc")
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    config = default_config(RANK)
    model_dir = str(root / "model")
    save_model_dir(
        model_dir, RecsysNet.from_config(config), config, _factors("user_id", 30, rng), _factors("item_id", 12, rng)
    )
    uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        experiment = MlflowClient(uri).create_experiment("recommender", artifact_location=f"file://{root}/artifacts")
        with mlflow.start_run(experiment_id=experiment) as run:
            info = log_pyfunc_model(model_dir)
        with mlflow.start_run(experiment_id=experiment) as legacy:
            mlflow.log_artifacts(model_dir, artifact_path="model")  # how versions were logged before the pyfunc
        yield {
            "uri": uri,
            "model_dir": model_dir,
            "run_id": run.info.run_id,
            "info": info,
            "legacy": legacy.info.run_id,
        }


def test_the_logged_model_has_a_signature_over_the_impression_columns(logged):
    info = mlflow.models.get_model_info(f"runs:/{logged['run_id']}/model")
    assert info.model_uri and info.flavors.keys() >= {"python_function"}
    signature = info.signature
    assert signature is not None
    assert [c.name for c in signature.inputs.inputs] == list(INPUT_COLUMNS)
    assert {c.name: c.type.name for c in signature.inputs.inputs} == {
        "user_id": "long",
        "item_id": "long",
        "device": "string",
        "position": "long",
        "hour": "double",
    }
    assert [c.name for c in signature.outputs.inputs] == [OUTPUT_COLUMN]
    assert info.saved_input_example_info is not None


def test_it_loads_and_predicts_through_pyfunc_like_the_model_directory(logged, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged["uri"])
    expected = score(load_model_dir(logged["model_dir"]), IMPRESSIONS)
    for uri in (f"runs:/{logged['run_id']}/model", logged["info"].model_uri):
        predicted = mlflow.pyfunc.load_model(uri).predict(IMPRESSIONS)
        assert list(predicted.columns) == [OUTPUT_COLUMN]
        np.testing.assert_allclose(predicted[OUTPUT_COLUMN].to_numpy(), expected, rtol=1e-6)
        assert ((predicted[OUTPUT_COLUMN] > 0) & (predicted[OUTPUT_COLUMN] < 1)).all()


def test_the_logged_model_holds_code_and_tensors_never_a_pickle(logged, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged["uri"])
    local = Path(mlflow.artifacts.download_artifacts(logged["info"].model_uri))
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert "python_model.pkl" not in files and not any(f.endswith((".pkl", ".pickle")) for f in files)
    assert {f"artifacts/model/{name}" for name in MODEL_FILES} <= files
    assert "pyfunc.py" in files  # the model's code, as source (MLflow "models from code")


def test_registered_versions_load_for_scoring_whether_pyfunc_or_raw_files(logged, monkeypatch):
    """``evaluate``/``recommend`` read ``models:/recommender/<v>``: the pyfunc's model_dir, or the old raw folder."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged["uri"])
    registry = ModelRegistry(tracking_uri=logged["uri"])
    with contextlib.suppress(MlflowException):
        registry.client.create_registered_model("recommender-test")
    new = registry.register("recommender-test", f"runs:/{logged['run_id']}/model", logged["run_id"], "new", {})
    old = registry.register("recommender-test", f"runs:/{logged['legacy']}/model", logged["legacy"], "old", {})
    assert new.source == logged["info"].model_uri and old.source == f"runs:/{logged['legacy']}/model"
    # Registered by hand from the run path (MLflow 3 then downloads the logged model one folder down).
    by_hand = registry.client.create_model_version("recommender-test", f"runs:/{logged['run_id']}/model").version
    expected = score(load_model_dir(logged["model_dir"]), IMPRESSIONS)
    for version in (new.version, old.version, by_hand):
        with model_directory(f"models:/recommender-test/{version}") as model_dir:
            np.testing.assert_allclose(score(load_model_dir(model_dir), IMPRESSIONS), expected, rtol=1e-6)
    with model_directory(f"runs:/{logged['run_id']}/model") as model_dir:
        np.testing.assert_allclose(score(load_model_dir(model_dir), IMPRESSIONS), expected, rtol=1e-6)
