"""Recommendations pipeline constants shared by the control plane and the workloads.

Importing this module is cheap (no torch, no Spark): the control plane reads it to
build commands, windows and code versions.
"""

from __future__ import annotations

import posixpath

# Timeline: for partition date D, embeddings and the model learn from D-7..D-1; D is held out.
EMBEDDING_WINDOW_DAYS = 7
TRAIN_WINDOW_DAYS = 7

# Spark MLlib ALS (implicit feedback).
ALS_RANK = 12
ALS_ITERATIONS = 10
ALS_REG = 2.0
ALS_ALPHA = 10.0
# Implicit rating per (user, item): each click adds 1 + log1p(dwell)/DWELL_LOG_SCALE,
# each impression without a click subtracts ALS_NEGATIVE_WEIGHT (ALS reads r < 0 as a
# confident "no": preference 0 with confidence 1 + alpha*|r|).
ALS_DWELL_LOG_SCALE = 4.0
ALS_NEGATIVE_WEIGHT = 1.5
ALS_BLOCKS = 4  # fixed user/item block count: part of the determinism contract

# PyTorch training (DistributedDataParallel under torchrun).
TRAIN_EPOCHS = 4
TRAIN_BATCH_SIZE = 4096  # per worker
TRAIN_LR = 3e-3
TRAIN_WEIGHT_DECAY = 1e-5
TRAIN_NPROC = 2
TRAIN_BACKEND = "gloo"  # "nccl" with --device cuda on GPU nodes
TRAIN_DEVICE = "cpu"
HIDDEN_SIZES = (64, 32)
# A fixed share of the window's rows is held out of training to measure skill: a model whose
# validation log loss does not beat the constant base-rate predictor by MIN_SKILL_NATS is
# replaced by that constant predictor (AUC exactly 0.5), so a model without signal never
# ranks by numerical noise.
VALIDATION_FRACTION = 0.05
MIN_SKILL_NATS = 1e-3
MAX_POSITION = 19  # positions above are clipped into the last bucket

# Gate and inference.
AUC_GATE = 0.82
TOP_K = 20

EXPERIMENT_NAME = "recommender"
REGISTERED_MODEL_NAME = "recommender"
MODEL_ARTIFACT_PATH = "model"

# Bump when the workload's output for the same inputs would change.
EMBEDDINGS_CODE_VERSION = "interaction_embeddings/1"
TRAIN_CODE_VERSION = "recommender_model/1"
RECOMMEND_CODE_VERSION = "recommendations/1"

CHECKPOINTS_FOLDER = "_checkpoints"


def checkpoint_uri_for(out_uri: str) -> str:
    """Where training checkpoints for version ``out_uri`` live.

    ``{partition}/v={version}`` -> ``{partition}/_checkpoints/v={version}``: outside the
    version folder, because ``ArtifactWriter`` wipes an uncommitted version folder when
    it opens, and because checkpoints are not part of the committed file list; still
    keyed by the version, so a retry of the same work resumes and different work never
    does. Underscore folders are ignored by version listings.
    """
    out_uri = out_uri.rstrip("/")
    parent, leaf = posixpath.split(out_uri)
    if "://" in out_uri and parent.endswith(":/"):
        raise ValueError(f"cannot place checkpoints next to a bucket root: {out_uri}")
    return posixpath.join(parent, CHECKPOINTS_FOLDER, leaf)
