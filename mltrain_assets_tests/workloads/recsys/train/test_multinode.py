"""Training across 2 "nodes": the Indexed Job the k8s backend would submit, executed by k8s-local."""

import pytest
from dagster import AssetExecutionContext, MaterializeResult, asset, materialize
from mlflow.tracking import MlflowClient

from mltrain_assets.artifacts import read_manifest
from mltrain_assets.launch.local import command_params
from mltrain_assets.resources.compute import ComputeBackend

pytestmark = pytest.mark.slow


def test_two_nodes_train_the_same_model_as_one_and_record_world_size_two(recsys_world, trained_model, monkeypatch):
    for name, value in recsys_world.env.items():
        monkeypatch.setenv(name, value)
    out_uri = recsys_world.uri("recommender_model", "2026-03-08", "v=two-nodes")
    params = recsys_world.train_params(out_uri)
    backend = ComputeBackend(
        backend="k8s-local",
        train_nodes="2",
        mlflow_tracking_uri=recsys_world.mlflow.tracking_uri,
        mlflow_artifacts_uri=recsys_world.mlflow.artifacts_uri,
    )
    captured = {}

    @asset
    def recommender(context: AssetExecutionContext, compute: ComputeBackend) -> MaterializeResult:
        captured["objects"] = compute.manifests(context, compute.bind(params), timeout_s=600, profile="training")
        captured["summary"] = compute.run(context, params, timeout_s=600, profile="training").summary
        return MaterializeResult()

    assert materialize([recommender], resources={"compute": backend}).success
    service, job = captured["objects"]
    assert (service["kind"], job["kind"], job["spec"]["completions"]) == ("Service", "Job", 2)
    assert command_params(job["spec"]["template"]["spec"]["containers"][0]["args"])["nproc_per_node"] == 1

    summary = captured["summary"]
    assert summary["world_size"] == 2 and read_manifest(out_uri)["summary"]["world_size"] == 2
    run = MlflowClient(recsys_world.mlflow.tracking_uri).get_run(summary["mlflow_run_id"])
    assert run.data.params["world_size"] == "2" and run.data.params["nnodes"] == "2"
    # Same data, same seed, same world size: the model's quality does not depend on how nodes split it.
    assert summary["auc"] == pytest.approx(trained_model["summary"]["auc"], abs=0.005)
    assert summary["auc"] > 0.8
