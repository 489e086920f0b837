"""Checkpoints: only whole files of the same training setup are resumed, and the setup is what the params version."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.pipelines.recsys.params import TrainParams
from mltrain_assets.pipelines.recsys.workloads.train.checkpoints import (
    checkpoint_uri,
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
    remove_checkpoints,
    training_fingerprint,
    write_checkpoint,
)
from mltrain_assets.workloads.common.params import MlflowSettings

BASE = TrainParams(
    date="2026-03-08",
    interactions_uris=("file:///w/user_interactions/2026-03-01/v=a", "file:///w/user_interactions/2026-03-02/v=b"),
    eval_uri="file:///w/user_interactions/2026-03-08/v=c",
    embeddings_uri="file:///w/interaction_embeddings/2026-03-08/v=d",
    out_uri="file:///w/recommender_model/2026-03-08/v=e",
)


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
    remove_checkpoints(uri)
    assert list_checkpoints(uri) == [] and not (tmp_path / "_checkpoints/v=x").exists()
    remove_checkpoints(uri)  # nothing left to remove is fine


def test_checkpoints_live_next_to_the_version_unless_the_params_say_where():
    assert checkpoint_uri(BASE) == "file:///w/recommender_model/2026-03-08/_checkpoints/v=e"
    assert checkpoint_uri(dataclasses.replace(BASE, checkpoint_uri="s3://b/ck")) == "s3://b/ck"
    assert (
        contract.checkpoint_uri_for("s3://b/recommender_model/2026-03-08/v=abc")
        == "s3://b/recommender_model/2026-03-08/_checkpoints/v=abc"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"epochs": 9},  # a longer run resumes a shorter one
        {"nproc_per_node": 1, "nnodes": 2, "node_rank": 1, "rdzv_endpoint": "h:29400"},  # the same model, laid out
        {"backend": "nccl", "device": "cuda"},
        {"checkpoint_uri": "file:///elsewhere", "keep_checkpoints": True, "out_uri": "file:///w/v=f"},
        {"experiment": "other", "mlflow": MlflowSettings(tracking_uri="http://mlflow:5000")},
    ],
)
def test_what_does_not_change_the_weights_keeps_the_fingerprint(change):
    assert training_fingerprint(dataclasses.replace(BASE, **change)) == training_fingerprint(BASE)


@pytest.mark.parametrize(
    "change",
    [
        {"batch_size": 512},
        {"lr": 1e-3},
        {"weight_decay": 0.0},
        {"hidden_width": 128},
        {"seed": 1},
        {"shuffle_labels": True},
        {"date": "2026-03-09"},
        {"interactions_uris": ("file:///w/user_interactions/2026-03-01/v=a",)},
        {"embeddings_uri": "file:///w/interaction_embeddings/2026-03-08/v=z"},
        {"eval_uri": "file:///w/user_interactions/2026-03-08/v=z"},
    ],
)
def test_another_setup_never_resumes_these_checkpoints(change):
    assert training_fingerprint(dataclasses.replace(BASE, **change)) != training_fingerprint(BASE)
