"""Champion/challenger scoring: the same AUC from a model folder, an MLflow run URI and the CLI."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest

from mltrain_assets.artifacts import read_table
from mltrain_assets.workloads._runtime import DataRejected
from mltrain_assets.workloads.evaluate_recommender import evaluate, evaluate_model_dir
from mltrain_assets_tests.workloads._recsys_world import recsys_world, run_module, trained_model


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return recsys_world(tmp_path_factory)


def test_evaluating_the_committed_model_reproduces_the_training_auc(world):
    manifest = trained_model(world)
    result = evaluate(manifest["uri"], world.eval_uri)
    assert result["auc"] == pytest.approx(manifest["summary"]["auc"], abs=1e-12)
    assert result["n"] == manifest["summary"]["n_eval"] == 40_000
    assert 0 < result["positives"] < result["n"]


def test_cli_scores_an_mlflow_run_uri(world, monkeypatch):
    summary = trained_model(world)["summary"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world.env["MLFLOW_TRACKING_URI"])
    output = run_module(
        [sys.executable, "-m", "mltrain_assets.workloads.evaluate_recommender",
         "--model-uri", summary["model_artifact_uri"], "--eval-uri", world.eval_uri],
        world.env,
    ).stdout  # fmt: skip
    reported = json.loads(output.strip().splitlines()[-1])
    assert reported["auc"] == pytest.approx(summary["auc"], abs=1e-12) and reported["n"] == 40_000
    assert evaluate(summary["model_artifact_uri"], world.eval_uri)["auc"] == pytest.approx(summary["auc"], abs=1e-12)


def test_unknown_users_and_items_are_scored_and_one_class_days_are_rejected(world):
    model_dir = trained_model(world)["uri"]
    day = read_table(world.eval_uri, "events.parquet").to_pandas().head(2_000).copy()
    day.loc[day.index[:500], "user_id"] = 10**12  # never seen
    day.loc[day.index[250:750], "item_id"] = 10**12
    assert 0.5 < evaluate_model_dir(model_dir, day) <= 1.0
    no_clicks = day.assign(clicked=0)
    with pytest.raises(DataRejected, match="both_classes_present"):
        evaluate_model_dir(model_dir, pd.DataFrame(no_clicks))
