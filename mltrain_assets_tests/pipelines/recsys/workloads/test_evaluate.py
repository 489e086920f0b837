"""Champion/challenger scoring: the same AUC from a model folder, an MLflow run URI and the workload."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mltrain_assets.artifacts import read_table
from mltrain_assets.pipelines.recsys.params import EvaluateParams
from mltrain_assets.pipelines.recsys.workloads.evaluate import evaluate, evaluate_model_dir
from mltrain_assets.workloads.common.runtime import DataRejected
from mltrain_assets.workloads.ingest.params import EVENTS_FILE

pytestmark = pytest.mark.slow  # every test here needs the trained model (Spark, torchrun)


def test_evaluating_the_committed_model_reproduces_the_training_auc(recsys_world, trained_model):
    result = evaluate(trained_model["uri"], recsys_world.eval_uri)
    # In this (pytest) process torch may use another thread count than the workload did: float32 scores
    # can differ in the last bits and flip a near-tie (seen: 1.5e-9 in AUC). Workload vs workload is exact below.
    assert result["auc"] == pytest.approx(trained_model["summary"]["auc"], abs=1e-6)
    assert result["n"] == trained_model["summary"]["n_eval"] == 40_000
    assert 0 < result["positives"] < result["n"]


def test_workload_scores_an_mlflow_run_uri(recsys_world, trained_model, monkeypatch):
    summary = trained_model["summary"]
    # The workload process finds the MLflow store through its params alone (its environment has none).
    params = EvaluateParams(
        model_uri=summary["model_artifact_uri"], eval_uri=recsys_world.eval_uri, mlflow=recsys_world.mlflow
    )
    output = recsys_world.run(params).stdout
    reported = json.loads(output.strip().splitlines()[-1])
    assert reported["auc"] == pytest.approx(summary["auc"], abs=1e-12) and reported["n"] == 40_000
    monkeypatch.setenv("MLFLOW_TRACKING_URI", recsys_world.mlflow.tracking_uri)
    assert evaluate(summary["model_artifact_uri"], recsys_world.eval_uri)["auc"] == pytest.approx(
        summary["auc"], abs=1e-12
    )


def test_unknown_users_and_items_are_scored_and_one_class_days_are_rejected(recsys_world, trained_model):
    model_dir = trained_model["uri"]
    day = read_table(recsys_world.eval_uri, EVENTS_FILE).to_pandas().head(2_000).copy()
    day.loc[day.index[:500], "user_id"] = 10**12  # never seen
    day.loc[day.index[250:750], "item_id"] = 10**12
    assert 0.5 < evaluate_model_dir(model_dir, day) <= 1.0
    no_clicks = day.assign(clicked=0)
    with pytest.raises(DataRejected, match="both_classes_present"):
        evaluate_model_dir(model_dir, pd.DataFrame(no_clicks))
