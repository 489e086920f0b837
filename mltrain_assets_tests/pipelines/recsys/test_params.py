"""The recommendations workloads' params: each crosses the command line intact to a module that runs it."""

from __future__ import annotations

import importlib

import pytest

from mltrain_assets.pipelines.recsys.params import EmbeddingsParams, EvaluateParams, RecommendParams, TrainParams
from mltrain_assets.workloads.common.params import MlflowSettings
from mltrain_assets.workloads.common.spark import SparkSettings

EXAMPLES = [
    EmbeddingsParams(
        date="2026-03-08",
        rank=8,
        interactions_uris=("file:///w/a", "file:///w/b"),
        spark=SparkSettings(master="spark://m:7077", conf={"spark.driver.memory": "4g"}, s3a=True),
        out_uri="file:///w/e/v=1",
    ),
    TrainParams(
        date="2026-03-08",
        lr=1e-3,
        shuffle_labels=True,
        interactions_uris=("file:///w/a",),
        eval_uri="file:///w/b",
        embeddings_uri="file:///w/e/v=1",
        nnodes=2,
        nproc_per_node=4,
        rdzv_endpoint="h:29400",
        mlflow=MlflowSettings(tracking_uri="http://mlflow:5000"),
        out_uri="file:///w/m/v=1",
    ),
    EvaluateParams(model_uri="models:/recommender/3", eval_uri="file:///w/b"),
    RecommendParams(model_uri="models:/recommender/3", top_k=5, users_limit=None, hour=8, out_uri="file:///w/r/v=1"),
]


@pytest.mark.parametrize("params", EXAMPLES, ids=lambda p: type(p).__name__)
def test_params_cross_the_command_line_intact_to_a_runnable_module(params):
    command = params.command("python")
    assert command[:3] == ["python", "-m", params.module]
    assert type(params).parse_args(command[3:]) == params
    module = importlib.import_module(params.module)
    assert callable(module.main)


def test_world_size_is_every_node_s_workers():
    assert TrainParams(date="2026-03-08", nnodes=3, nproc_per_node=4).world_size == 12
    assert "world_size" not in TrainParams(date="2026-03-08").to_dict()  # derived, never a second source
