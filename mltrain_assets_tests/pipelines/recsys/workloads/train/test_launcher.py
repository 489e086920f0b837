"""DDP training under torchrun: the AUC gate's two sides, MLflow logging, kill + resume bit for bit, and the
launcher handing its workers exactly the params it received."""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow.models
import mlflow.pyfunc
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch.distributed.run import config_from_args
from torch.distributed.run import parse_args as torchrun_parse_args

from mltrain_assets.artifacts import (
    ArtifactNotCommitted,
    ArtifactWriter,
    filesystem,
    read_bytes,
    read_json,
    read_manifest,
)
from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.pipelines.recsys.params import TrainParams
from mltrain_assets.pipelines.recsys.workloads.model import MODEL_FILES, load_model_dir, score
from mltrain_assets.pipelines.recsys.workloads.train import agent, worker
from mltrain_assets.pipelines.recsys.workloads.train.checkpoints import list_checkpoints, training_fingerprint
from mltrain_assets.pipelines.recsys.workloads.train.data import epoch_learning_rate, read_events
from mltrain_assets.pipelines.recsys.workloads.train.launcher import (
    MAX_RESTARTS,
    torchrun_command,
    validate,
    worker_environment,
)
from mltrain_assets.workloads.common.params import MlflowSettings
from mltrain_assets_tests.pipelines.recsys.workloads._world import DAGSTER_LINKS, DATE, REPO, TRAIN_EPOCHS, TRAIN_NPROC

PARAMS = TrainParams(
    date=DATE,
    epochs=3,
    lr=1e-3,
    shuffle_labels=True,
    interactions_uris=("file:///w/user_interactions/2026-03-01/v=a", "file:///w/user_interactions/2026-03-02/v=b"),
    eval_uri="file:///w/user_interactions/2026-03-08/v=c",
    embeddings_uri="file:///w/interaction_embeddings/2026-03-08/v=d",
    mlflow=MlflowSettings(tracking_uri="http://mlflow:5000"),
    out_uri="file:///w/recommender_model/2026-03-08/v=e",
)


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


def _listening_addresses(session: int) -> set[str]:
    """``address:port`` of every TCP socket listening in a process session (the launch and all it started)."""
    inodes = set()
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3]) != session:
                continue
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                raw, port = fields[1].split(":")
                if len(raw) == 8:
                    address = socket.inet_ntoa(bytes.fromhex(raw)[::-1])
                else:
                    words = bytes.fromhex(raw)
                    address = socket.inet_ntop(
                        socket.AF_INET6, b"".join(words[i : i + 4][::-1] for i in range(0, 16, 4))
                    )
                found.add(f"{address}:{int(port, 16)}")
    return found


# --------------------------------------------------------------------------- the command line (fast)


@pytest.mark.parametrize(
    "layout",
    [
        {},  # one node, TRAIN_NPROC workers
        {"nnodes": 2, "nproc_per_node": 1, "node_rank": 1, "rdzv_endpoint": "10.0.0.5:29400"},
    ],
    ids=["standalone", "multi-node"],
)
def test_torchrun_hands_every_worker_the_params_the_launcher_received(layout, monkeypatch):
    monkeypatch.setenv("MLTRAIN_POD_IP", "10.0.0.7")
    params = dataclasses.replace(PARAMS, **layout)
    command = torchrun_command(params, python="/venv/bin/python")
    assert command[:3] == ["/venv/bin/python", "-m", agent.__name__]  # torchrun, its stores bound (agent.py)
    bound = command[command.index("--local-addr") + 1]
    assert bound == ("10.0.0.7" if params.nnodes > 1 else "127.0.0.1")

    # torchrun's own parser reads the layout we asked for ...
    config, _python, worker_args = config_from_args(torchrun_parse_args(command[3:]))
    assert config.min_nodes == config.max_nodes == params.nnodes
    assert config.nproc_per_node * config.max_nodes == params.world_size
    # Several nodes: the agents restart their workers to re-rendezvous with a replaced node (test_multinode.py).
    assert config.max_restarts == (MAX_RESTARTS if params.nnodes > 1 else 0) and MAX_RESTARTS > 0
    if params.rdzv_endpoint:
        assert config.rdzv_backend == "c10d" and config.rdzv_endpoint == "10.0.0.5:29400"
        assert config.run_id == training_fingerprint(params)  # the same on every node
        assert "--standalone" not in command
    else:
        assert "--standalone" in command
    # ... and each worker process it starts parses back exactly the launcher's params.
    module_at = worker_args.index("-m") + 1
    assert worker_args[module_at] == worker.MODULE
    received: list[TrainParams] = []
    monkeypatch.setattr(worker, "train", lambda p: received.append(p) or 0)
    assert worker.main(worker_args[module_at + 1 :]) == 0
    assert received == [params] and received[0].to_json() == params.to_json()


def test_worker_environment_leaves_dagster_out_and_sizes_threads(monkeypatch):
    monkeypatch.setenv("DAGSTER_PIPES_CONTEXT", "x")
    env = worker_environment(PARAMS)
    assert "DAGSTER_PIPES_CONTEXT" not in env
    assert env["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // PARAMS.nproc_per_node))
    assert "CUBLAS_WORKSPACE_CONFIG" in worker_environment(dataclasses.replace(PARAMS, device="cuda"))
    # One node: the stores and the gloo pairs listen on loopback only.
    assert env["MLTRAIN_RDZV_BIND"] == "127.0.0.1" and env["GLOO_SOCKET_IFNAME"] == "lo"


def test_multi_node_training_without_its_pod_ip_is_refused_naming_it(monkeypatch):
    monkeypatch.delenv("MLTRAIN_POD_IP", raising=False)
    params = dataclasses.replace(PARAMS, nnodes=2, nproc_per_node=1, node_rank=0, rdzv_endpoint="job-0.job:29400")
    with pytest.raises(ValueError, match=r"2-node training needs \$MLTRAIN_POD_IP"):
        torchrun_command(params)


def test_params_that_cannot_train_are_refused_before_any_worker_starts(tmp_path):
    with pytest.raises(ValueError, match="needs rdzv_endpoint"):
        validate(dataclasses.replace(PARAMS, nnodes=2))
    with pytest.raises(ValueError, match=r"backend must be one of \['gloo', 'nccl'\]"):
        validate(dataclasses.replace(PARAMS, backend="mpi"))
    with pytest.raises(ValueError, match=r"device must be one of \['cpu', 'cuda'\]"):
        validate(dataclasses.replace(PARAMS, device="tpu"))
    with pytest.raises(ValueError, match="interactions_uris must be a non-empty list"):
        validate(dataclasses.replace(PARAMS, interactions_uris=()))
    with pytest.raises(ValueError, match="out_uri is empty"):
        validate(dataclasses.replace(PARAMS, out_uri=""))
    committed = f"file://{tmp_path}/committed"
    writer = ArtifactWriter(committed, producer="tests", code_version="test")
    writer.write_json("x.json", {})
    writer.commit()
    with pytest.raises(ArtifactNotCommitted, match="v=missing"):
        validate(
            dataclasses.replace(
                PARAMS,
                interactions_uris=(committed,),
                eval_uri=committed,
                embeddings_uri=f"file://{tmp_path}/v=missing",
            )
        )


# --------------------------------------------------------------------------- training (torchrun, slow)


@pytest.mark.slow
def test_good_labels_train_a_model_that_passes_the_gate_and_is_logged_to_mlflow(recsys_world, trained_model):
    manifest = trained_model
    summary = manifest["summary"]
    assert summary["auc"] > contract.AUC_THRESHOLD
    assert summary["epochs"] == TRAIN_EPOCHS and summary["resumed_from_epoch"] == 0
    assert summary["world_size"] == summary["nproc"] == TRAIN_NPROC
    assert not summary["shuffled_labels"] and not summary["no_skill_fallback"]
    assert summary["n_train"] > 250_000 and summary["n_eval"] == 40_000
    assert summary["model_artifact_uri"] == f"runs:/{summary['mlflow_run_id']}/model"
    assert set(manifest["files"]) == {*MODEL_FILES, "metrics.json"}
    metrics = read_json(manifest["uri"], "metrics.json")
    assert len(metrics["loss_history"]) == TRAIN_EPOCHS and metrics["loss_history"][-1] < metrics["loss_history"][0]
    # Checkpoints live next to the version, and are cleaned up once it is committed.
    fs, checkpoints = filesystem(contract.checkpoint_uri_for(manifest["uri"]))
    assert not fs.exists(checkpoints)

    # The run is in the store the params named (the workload's environment named none).
    client = MlflowClient(tracking_uri=recsys_world.mlflow.tracking_uri)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.run_name == f"recommender-{DATE}" and run.info.status == "FINISHED"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == contract.EXPERIMENT_NAME
    assert experiment.artifact_location.startswith(recsys_world.mlflow.artifacts_uri)
    assert run.data.metrics["auc"] == pytest.approx(summary["auc"])
    assert run.data.params["epochs"] == str(TRAIN_EPOCHS)
    assert run.data.params["world_size"] == str(TRAIN_NPROC) and run.data.params["nnodes"] == "1"
    assert run.data.tags["mltrain.out_uri"] == manifest["uri"]
    assert run.data.tags["mltrain.weights_sha256"] == summary["weights_sha256"]
    # Loss curves: one point per epoch at step=epoch, and nothing else under those names (no point at step 0).
    for name, history in (("train_loss", metrics["loss_history"]), ("val_loss", metrics["val_loss_history"])):
        points = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in points] == list(range(1, TRAIN_EPOCHS + 1)), name
        assert [m.value for m in points] == pytest.approx(history), name
    assert run.data.metrics["final_val_loss"] == pytest.approx(metrics["val_loss_history"][-1])
    assert run.data.metrics["final_train_loss"] == pytest.approx(metrics["loss_history"][-1])
    assert "final_loss" not in run.data.metrics
    assert {i.tags[0].value for i in run.inputs.dataset_inputs} == {"training", "evaluation"}
    # Launched for a Dagster run: tags name it and link back to it and to the asset partition.
    assert run.data.tags["mltrain.date"] == DATE and run.data.tags["mltrain.partition"] == DATE
    assert run.data.tags["mltrain.dagster_run_id"] == DAGSTER_LINKS["dagster_run_id"]
    assert run.data.tags["mltrain.dagster_run_url"] == "http://dagster.example:3000/runs/5f0c6a8e-training-run"
    assert run.data.tags["mltrain.dagster_asset_url"] == (
        f"http://dagster.example:3000/assets/recommender_model?view=partitions&partition={DATE}"
    )

    # The model is a pyfunc with a signature, loaded by URI, scoring like the committed model folder.
    model_uri = summary["model_artifact_uri"]
    impressions = read_events(recsys_world.eval_uri).to_pandas().head(500)
    rows = impressions.assign(hour=impressions["event_at"].dt.hour + impressions["event_at"].dt.minute / 60.0)
    rows = rows[["user_id", "item_id", "device", "position", "hour"]].astype({"position": "int64"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", recsys_world.mlflow.tracking_uri)
        signature = mlflow.models.get_model_info(model_uri).signature
        predicted = mlflow.pyfunc.load_model(model_uri).predict(rows)["click_probability"].to_numpy()
    assert [c.name for c in signature.inputs.inputs] == ["user_id", "item_id", "device", "position", "hour"]
    assert [c.name for c in signature.outputs.inputs] == ["click_probability"]
    expected = score(load_model_dir(manifest["uri"]), rows)
    np.testing.assert_allclose(predicted, expected, rtol=1e-5)


@pytest.mark.slow
def test_the_trained_models_run_carries_its_roc_curve_and_calibration_as_pngs(recsys_world, trained_model, tmp_path):
    from PIL import Image

    from mltrain_assets.pipelines.recsys.workloads.evaluate import CALIBRATION_FIGURE, ROC_FIGURE

    client = MlflowClient(tracking_uri=recsys_world.mlflow.tracking_uri)
    run_id = trained_model["summary"]["mlflow_run_id"]  # the run the registered version points to
    assert sorted(a.path for a in client.list_artifacts(run_id, "figures")) == sorted([CALIBRATION_FIGURE, ROC_FIGURE])
    for path in (ROC_FIGURE, CALIBRATION_FIGURE):
        with Image.open(client.download_artifacts(run_id, path, str(tmp_path))) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 300, (path, image.size)
            image.verify()


@pytest.mark.slow
def test_shuffled_labels_fail_the_gate(recsys_world):
    out_uri = recsys_world.uri("recommender_model", DATE, "v=shuffled")
    recsys_world.run(recsys_world.train_params(out_uri, shuffle_labels=True))
    summary = read_manifest(out_uri)["summary"]
    assert summary["shuffled_labels"]
    assert summary["auc"] < 0.6
    # The network has no validation skill, so the constant base-rate predictor ships (AUC 0.5);
    # the network's own AUC (ranking by numerical noise) stays on record.
    assert summary["no_skill_fallback"] and summary["skill_nats"] < contract.MIN_SKILL_NATS
    assert summary["auc"] == 0.5
    assert 0.0 < read_json(out_uri, "metrics.json")["network_auc"] < contract.AUC_THRESHOLD


@pytest.mark.slow
def test_a_killed_training_resumes_from_its_checkpoint_to_bit_identical_weights(recsys_world, trained_model):
    reference = trained_model
    out_uri = recsys_world.uri("recommender_model", DATE, "v=killed")
    params = recsys_world.train_params(out_uri)
    checkpoints = Path(filesystem(contract.checkpoint_uri_for(out_uri))[1])

    process = subprocess.Popen(
        params.command(sys.executable),
        env=recsys_world.env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    listening: set[str] = set()
    while not (checkpoints / "epoch=002.pt").exists():
        assert process.poll() is None, "training ended before the epoch-2 checkpoint"
        assert time.monotonic() < deadline, "no epoch-2 checkpoint within 180 s"
        listening |= _listening_addresses(process.pid)
        time.sleep(0.01)
    # The rendezvous store, the workers' store and gloo's pairs listened on loopback, never every interface.
    assert listening and {address.rsplit(":", 1)[0] for address in listening} == {"127.0.0.1"}
    os.killpg(process.pid, signal.SIGKILL)  # the launcher, torchrun and (through PDEATHSIG) the workers
    process.wait()
    time.sleep(0.5)
    assert read_manifest(out_uri) is None, "the killed run must not have committed"
    # The launcher and every worker carry the params (hence out_uri) on their command line.
    assert not _processes_mentioning(out_uri), "a DDP worker survived the kill"
    survived = list_checkpoints(contract.checkpoint_uri_for(out_uri))
    assert 2 <= max(survived) < TRAIN_EPOCHS

    recsys_world.run(params)
    resumed = read_manifest(out_uri)["summary"]
    assert resumed["resumed_from_epoch"] == max(survived)
    expected, actual = _weights(reference["uri"]), _weights(out_uri)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    assert resumed["weights_sha256"] == reference["summary"]["weights_sha256"]
    assert resumed["auc"] == reference["summary"]["auc"]


def test_the_learning_rate_decays_by_epoch_alone_so_resumed_and_longer_runs_take_the_same_steps():
    rates = [epoch_learning_rate(0.01, epoch) for epoch in range(1, 5)]
    assert rates[0] == 0.01 and rates[2] == pytest.approx(0.01 * contract.TRAIN_LR_DECAY**2)
    assert all(a > b > 0 for a, b in itertools.pairwise(rates))
    assert epoch_learning_rate(0.01, 3) == rates[2]  # no state, no run length: epoch 3 is epoch 3
