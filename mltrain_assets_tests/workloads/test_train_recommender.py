"""DDP training under torchrun: the AUC gate's two sides, MLflow logging, and kill + resume bit for bit."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from mltrain_assets.artifacts import filesystem, read_bytes, read_json, read_manifest
from mltrain_assets.workloads import recsys_config as cfg
from mltrain_assets.workloads.recsys_model import MODEL_FILES
from mltrain_assets.workloads.train_recommender import (
    latest_checkpoint,
    list_checkpoints,
    parser,
    read_checkpoint,
    torchrun_command,
    worker_environment,
    write_checkpoint,
)
from mltrain_assets_tests.workloads._recsys_world import (
    DATE,
    REPO,
    TRAIN_EPOCHS,
    recsys_world,
    run_module,
    trained_model,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return recsys_world(tmp_path_factory)


def _weights(uri: str) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(read_bytes(uri, "weights.pt")), weights_only=True)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_good_labels_train_a_model_that_passes_the_gate_and_is_logged_to_mlflow(world):
    manifest = trained_model(world)
    summary = manifest["summary"]
    assert summary["auc"] > cfg.AUC_GATE
    assert summary["epochs"] == TRAIN_EPOCHS and summary["resumed_from_epoch"] == 0
    assert not summary["shuffled_labels"] and not summary["no_skill_fallback"]
    assert summary["n_train"] > 250_000 and summary["n_eval"] == 40_000
    assert summary["model_artifact_uri"] == f"runs:/{summary['mlflow_run_id']}/model"
    assert set(manifest["files"]) == {*MODEL_FILES, "metrics.json"}
    metrics = read_json(manifest["uri"], "metrics.json")
    assert len(metrics["loss_history"]) == TRAIN_EPOCHS and metrics["loss_history"][-1] < metrics["loss_history"][0]
    # Checkpoints live next to the version, and are cleaned up once it is committed.
    assert not filesystem(cfg.checkpoint_uri_for(manifest["uri"]))[0].exists(
        filesystem(cfg.checkpoint_uri_for(manifest["uri"]))[1]
    )

    client = MlflowClient(tracking_uri=world.env["MLFLOW_TRACKING_URI"])
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.run_name == f"recommender-{DATE}" and run.info.status == "FINISHED"
    assert run.data.metrics["auc"] == pytest.approx(summary["auc"])
    assert run.data.params["epochs"] == str(TRAIN_EPOCHS)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == list(
        range(1, TRAIN_EPOCHS + 1)
    )
    assert {f.path for f in client.list_artifacts(run.info.run_id, "model")} == {f"model/{n}" for n in MODEL_FILES}
    assert {i.tags[0].value for i in run.inputs.dataset_inputs} == {"training", "evaluation"}


def test_shuffled_labels_fail_the_gate(world):
    out_uri = world.uri("recommender_model", DATE, "v=shuffled")
    run_module(world.train_command(out_uri, "--shuffle-labels"), world.env)
    summary = read_manifest(out_uri)["summary"]
    assert summary["shuffled_labels"]
    assert summary["auc"] < 0.6
    # The network has no validation skill, so the constant base-rate predictor ships (AUC 0.5);
    # the network's own AUC (ranking by numerical noise) stays on record.
    assert summary["no_skill_fallback"] and summary["skill_nats"] < cfg.MIN_SKILL_NATS
    assert summary["auc"] == 0.5
    assert 0.0 < read_json(out_uri, "metrics.json")["network_auc"] < cfg.AUC_GATE


def test_a_killed_training_resumes_from_its_checkpoint_to_bit_identical_weights(world):
    reference = trained_model(world)
    out_uri = world.uri("recommender_model", DATE, "v=killed")
    checkpoints = Path(filesystem(cfg.checkpoint_uri_for(out_uri))[1])

    process = subprocess.Popen(
        world.train_command(out_uri),
        env=world.env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while not (checkpoints / "epoch=002.pt").exists():
        assert process.poll() is None, "training ended before the epoch-2 checkpoint"
        assert time.monotonic() < deadline, "no epoch-2 checkpoint within 180 s"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher, torchrun and (through PDEATHSIG) the workers
    process.wait()
    time.sleep(0.5)
    assert read_manifest(out_uri) is None, "the killed run must not have committed"
    assert not _processes_mentioning(str(checkpoints)), "a DDP worker survived the kill"
    survived = list_checkpoints(cfg.checkpoint_uri_for(out_uri))
    assert 2 <= max(survived) < TRAIN_EPOCHS

    run_module(world.train_command(out_uri), world.env)
    resumed = read_manifest(out_uri)["summary"]
    assert resumed["resumed_from_epoch"] == max(survived)
    expected, actual = _weights(reference["uri"]), _weights(out_uri)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    assert resumed["weights_sha256"] == reference["summary"]["weights_sha256"]
    assert resumed["auc"] == reference["summary"]["auc"]


def test_latest_checkpoint_skips_other_setups_and_partial_files(tmp_path):
    uri = f"file://{tmp_path}/_checkpoints/v=x"
    for epoch, fingerprint in ((1, "mine"), (2, "mine"), (3, "other")):
        write_checkpoint(uri, epoch, {"epoch": epoch, "fingerprint": fingerprint, "w": torch.ones(2) * epoch})
    (tmp_path / "_checkpoints/v=x/.epoch=004.pt.123.tmp").write_bytes(b"half a file")
    (tmp_path / "_checkpoints/v=x/epoch=005.pt").write_bytes(b"garbage")
    assert list_checkpoints(uri) == [1, 2, 3, 5]
    epoch, payload = latest_checkpoint(uri, "mine", max_epoch=10)
    assert epoch == 2 and torch.equal(payload["w"], torch.full((2,), 2.0))
    assert latest_checkpoint(uri, "mine", max_epoch=1)[0] == 1
    assert latest_checkpoint(f"file://{tmp_path}/none", "mine", max_epoch=10) == (0, None)
    # Tensors and plain values only: readable with weights_only=True.
    assert read_checkpoint(uri, 1)["fingerprint"] == "mine"


def test_launch_command_and_worker_environment(monkeypatch):
    monkeypatch.setenv("DAGSTER_PIPES_CONTEXT", "x")
    args = parser().parse_args(
        [
            "--interactions-uris",
            "[]",
            "--eval-uri",
            "e",
            "--embeddings-uri",
            "m",
            "--date",
            DATE,
            "--out-uri",
            "file:///o/v=1",
        ]
    )
    command = torchrun_command(args, "file:///o/_checkpoints/v=1", 3)
    assert command[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert command[command.index("--nproc-per-node") + 1] == str(cfg.TRAIN_NPROC)
    assert "mltrain_assets.workloads.train_recommender_worker" in command
    assert command[command.index("--resume-from") + 1] == "3" and command[command.index("--backend") + 1] == "gloo"
    env = worker_environment(args)
    assert "DAGSTER_PIPES_CONTEXT" not in env and env["OMP_NUM_THREADS"] == env["MLTRAIN_TORCH_THREADS"]
    assert (
        cfg.checkpoint_uri_for("s3://b/recommender_model/2026-03-08/v=abc")
        == "s3://b/recommender_model/2026-03-08/_checkpoints/v=abc"
    )
    assert mlflow.__version__  # the launcher logs to MLflow in-process
