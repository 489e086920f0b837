"""The recommendations pipeline's contract: the one place for its windows, thresholds and names.

Assets, workloads, the demo, backfill and CLI all derive from this module. Importing it is
cheap (no torch, no Spark).
"""

from __future__ import annotations

import posixpath

import pyarrow as pa

from mltrain_assets.sdk import UTC_TS, DatasetSpec, Window

# Timeline for partition date D: the embeddings (ALS factors and the window's click and impression
# counts) learn from D-14..D-8, the model from D-7..D-1 over those frozen features, D is held out.
# Features never see the rows the model trains or validates on: computed from the same rows they
# carry each row's own click (a leak that lets the model memorize instead of generalize, and
# inflates the measured skill; at 25 impressions a user it cost 0.2 AUC on the held-out day).
EMBEDDING_WINDOW_DAYS = 7
TRAIN_WINDOW_DAYS = 7
EMBEDDINGS_WINDOW = Window(days=EMBEDDING_WINDOW_DAYS, end_offset=-(TRAIN_WINDOW_DAYS + 1))  # D-14 .. D-8
MODEL_WINDOW = Window(days=TRAIN_WINDOW_DAYS + 1)  # D-7 .. D-1 to train, D held out to evaluate
LANDING_WINDOW = Window(days=EMBEDDING_WINDOW_DAYS + TRAIN_WINDOW_DAYS + 1)  # D-14 .. D: what a date needs landed

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
# The ALS plan (embeddings.als_plan): user/item blocks and checkpointing from the input's size
# alone (never the machine's), so the same window gives the same factors everywhere. Today's
# sizes (~0.9M ratings) keep ALS_BLOCKS and no checkpointing.
ALS_BLOCKS = 4  # the fewest blocks
ALS_MAX_BLOCKS = 64
ALS_RATINGS_PER_BLOCK = 2_000_000  # (user, item) ratings one block's normal equations sum over
ALS_ENTITIES_PER_BLOCK = 250_000  # users (items) one block solves
ALS_CHECKPOINT_MIN_RATINGS = 4_000_000  # from here the plan checkpoints the item factors ...
ALS_CHECKPOINT_INTERVAL = 5  # ... every this many iterations (cuts lineage, frees old shuffle files)

# PyTorch training (DistributedDataParallel under torchrun).
TRAIN_EPOCHS = 4
TRAIN_BATCH_SIZE = 4096  # per worker
TRAIN_LR = 3e-3
TRAIN_LR_DECAY = 0.8  # learning rate multiplied by this per epoch (train/worker.epoch_learning_rate)
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
AUC_THRESHOLD = 0.82  # the promotion gate: held-out AUC must be above it
TOP_K = 20
# Top-K inference (recommend.py): a catalogue of at most RECOMMEND_CANDIDATES items is scored
# whole for every user (today's 1k); a larger one is narrowed per user to that many candidates,
# RECOMMEND_POPULAR of them the window's most clicked items, the rest by ALS dot product. Both
# change the output, and so recommend's derived code version.
RECOMMEND_CANDIDATES = 1_000
RECOMMEND_POPULAR = 100

EXPERIMENT_NAME = "recommender"
REGISTERED_MODEL_NAME = "recommender"
MODEL_ARTIFACT_PATH = "model"

CHECKPOINTS_FOLDER = "_checkpoints"

# What an interaction_embeddings version holds (and a model folder carries along).
USER_FACTORS_FILE = "user_factors.parquet"
ITEM_FACTORS_FILE = "item_factors.parquet"

INTERACTIONS_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),  # unique per impression
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("event_at", UTC_TS, nullable=False),  # impression time; defines the hour bucket
        pa.field("device", pa.string(), nullable=False),  # 'ios' | 'android' | 'web'
        pa.field("position", pa.int32(), nullable=False),  # slot in the shown list, 0-based
        pa.field("clicked", pa.int8(), nullable=False),  # label: 1 engaged, 0 not
        pa.field("dwell_seconds", pa.float64(), nullable=False),  # 0 when not clicked
    ]
)

# What a valid impression satisfies (DuckDB predicates by rule name); ingestion quarantines the rest.
INTERACTIONS_RULES = {
    "event_id_present": "event_id IS NOT NULL AND length(event_id) > 0",
    "valid_label": "clicked IN (0, 1)",
    "known_device": "device IN ('ios', 'android', 'web')",
    "non_negative_position": "position >= 0",
    "non_negative_dwell": "dwell_seconds >= 0",
}
INTERACTIONS = DatasetSpec("interactions", INTERACTIONS_SCHEMA, "event_id", "event_at", INTERACTIONS_RULES, 1_000)


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
