"""Training across 2 "nodes": the Indexed Job the k8s backend would submit, executed by k8s-local."""

import threading
import time
from pathlib import Path

import pytest
from dagster import AssetExecutionContext, DagsterInstance, MaterializeResult, asset, materialize
from mlflow.tracking import MlflowClient

from mltrain_assets.artifacts import filesystem, read_manifest
from mltrain_assets.launch.local import command_params, evict_dir
from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.resources.deployments import KubernetesHereCompute

pytestmark = pytest.mark.slow


def _backend(recsys_world) -> KubernetesHereCompute:
    return KubernetesHereCompute(
        train_nodes="2",
        mlflow_tracking_uri=recsys_world.mlflow.tracking_uri,
        mlflow_artifacts_uri=recsys_world.mlflow.artifacts_uri,
    )


def test_two_nodes_train_the_same_model_as_one_and_record_world_size_two(recsys_world, trained_model, monkeypatch):
    for name, value in recsys_world.env.items():
        monkeypatch.setenv(name, value)
    out_uri = recsys_world.uri("recommender_model", "2026-03-08", "v=two-nodes")
    params = recsys_world.train_params(out_uri)
    captured = {}

    @asset
    def recommender(context: AssetExecutionContext, compute: KubernetesHereCompute) -> MaterializeResult:
        captured["objects"] = compute.render(context, compute.bind(params), timeout_s=600, profile="training")
        captured["summary"] = compute.run(context, params, timeout_s=600, profile="training").summary
        return MaterializeResult()

    assert materialize([recommender], resources={"compute": _backend(recsys_world)}).success
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


def test_an_evicted_node_is_replaced_and_training_resumes_to_the_same_weights(
    recsys_world, trained_model, monkeypatch, tmp_path
):
    for name, value in recsys_world.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLTRAIN_HOME", str(tmp_path / "home"))
    out_uri = recsys_world.uri("recommender_model", "2026-03-08", "v=evicted")
    params = recsys_world.train_params(out_uri)
    checkpoints = Path(filesystem(contract.checkpoint_uri_for(out_uri))[1])
    results = []
    evicted_at: list[list[int]] = []

    def evict_node_1_during_epoch_3(pod: str) -> None:
        # Once epoch 2 is checkpointed (the workers are in epoch 3), as `touch $MLTRAIN_HOME/k8s-local/evict/POD` would.
        deadline = time.monotonic() + 300
        while not (checkpoints / "epoch=002.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        evict_dir().mkdir(parents=True, exist_ok=True)
        (evict_dir() / pod).touch()
        evicted_at.append(sorted(int(p.name[6:9]) for p in checkpoints.glob("epoch=*.pt")))

    @asset
    def recommender(context: AssetExecutionContext, compute: KubernetesHereCompute) -> MaterializeResult:
        _, job = compute.render(context, compute.bind(params), timeout_s=600, profile="training")
        trigger = threading.Thread(target=evict_node_1_during_epoch_3, args=(f"{job['metadata']['name']}-1",))
        trigger.start()
        results.append(compute.run(context, params, timeout_s=600, profile="training"))
        trigger.join()
        return MaterializeResult()

    instance = DagsterInstance.ephemeral()
    result = materialize([recommender], resources={"compute": _backend(recsys_world)}, instance=instance)
    assert result.success
    assert evicted_at and max(evicted_at[0]) < contract_epochs(recsys_world), "evicted after training ended"
    (trained,) = results
    # Node 1 ran twice (the evicted pod and its replacement); node 0 once, its workers restarted in place.
    assert trained.attempts == {1: 2} and trained.seconds_lost > 0
    # The step's log says which pod was replaced and why.
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("-1 (index 1) was disrupted: phase Failed, condition DisruptionTarget" in m for m in logged)
    # Resumed from the epoch-2 (or later) checkpoint, bit for bit the uninterrupted training's weights.
    assert trained.summary["weights_sha256"] == trained_model["summary"]["weights_sha256"]
    assert read_manifest(out_uri)["summary"]["weights_sha256"] == trained.summary["weights_sha256"]


def contract_epochs(recsys_world) -> int:
    return recsys_world.train_params("file:///unused").epochs
