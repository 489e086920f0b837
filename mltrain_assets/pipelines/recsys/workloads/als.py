"""Spark MLlib ALS (implicit feedback) over a window of interactions: the plan, the exact ratings, the fit, its loss.

The steps ``embeddings.fit_embeddings`` runs in order: ``window_bounds`` (reject an empty window or ids outside
Java ints), ``aggregate_window`` (each (user, item) pair's rating summed in integer micro-units, so exact whatever
the shuffle order), ``als_plan`` (rank, blocks and checkpointing from the input's size only), ``fit_als``,
``observed_loss`` and ``collect_factors`` (the factors as Arrow, aligned with the window's ids).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pyarrow as pa

from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.workloads.common.runtime import DataRejected


@dataclasses.dataclass(frozen=True)
class AlsPlan:
    """How ALS runs over one window: its rank, user/item block count and checkpoint interval (-1: none)."""

    rank: int
    blocks: int
    checkpoint_interval: int

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def als_plan(ratings: int, users: int, items: int, rank: int = contract.ALS_RANK) -> AlsPlan:
    """The ALS settings for ``ratings`` (user, item) pairs over ``users`` users and ``items`` items.

    Blocks: enough that one block's normal equations sum over at most ``ALS_RATINGS_PER_BLOCK``
    ratings and solve at most ``ALS_ENTITIES_PER_BLOCK`` users (items), rounded up to a power of
    two (the plan changes only when the input doubles) and kept within
    ``[ALS_BLOCKS, ALS_MAX_BLOCKS]``. They depend on the input only, never on the machine's
    cores: the block count decides how each user's and item's sums are grouped, hence the
    factors' last bits, and the output is versioned by its inputs and code alone; blocks taken
    from the cores would give the same version different factors on another machine.

    Checkpointing: from ``ALS_CHECKPOINT_MIN_RATINGS`` ratings, every
    ``ALS_CHECKPOINT_INTERVAL`` iterations (Spark checkpoints the item factors, truncating
    the lineage a lost block would be recomputed through, and deletes older shuffle files).

    Rank is the params' (a modelling choice, the ranker's feature width), not a scaling one:
    ALS's cost grows with rank squared per rating, and the plan never trades quality for time.
    Today's sizes (~0.9M ratings, 10k users, 1k items) give 4 blocks and no checkpointing.
    """
    if min(ratings, users, items) < 0:
        raise ValueError(f"als_plan: sizes must be >= 0, got ratings={ratings} users={users} items={items}")
    needed = max(1.0, ratings / contract.ALS_RATINGS_PER_BLOCK, max(users, items) / contract.ALS_ENTITIES_PER_BLOCK)
    blocks = min(max(contract.ALS_BLOCKS, 1 << math.ceil(math.log2(needed))), contract.ALS_MAX_BLOCKS)
    checkpoint_interval = contract.ALS_CHECKPOINT_INTERVAL if ratings >= contract.ALS_CHECKPOINT_MIN_RATINGS else -1
    return AlsPlan(rank=rank, blocks=blocks, checkpoint_interval=checkpoint_interval)


def factors_table(factors: pa.Table, counts: pa.Table, id_column: str, rank: int) -> pa.Table:
    """Every id of the window (``counts``), sorted, with its ALS vector (zeros when ALS left it out) and counts.

    ``factors`` is ALS's ``(id, features)`` as Arrow; the join is a ``searchsorted`` over the
    sorted window ids, so a million ids cost a few vectors, not a Python object each.
    """
    counts = counts.sort_by(id_column)
    ids = counts.column(id_column).to_numpy().astype(np.int64)
    fitted_ids = factors.column("id").to_numpy().astype(np.int64)
    vectors = np.zeros((len(ids), rank), np.float32)
    if len(fitted_ids):
        at = np.searchsorted(ids, fitted_ids)
        if (at >= len(ids)).any() or (ids[np.minimum(at, len(ids) - 1)] != fitted_ids).any():
            raise RuntimeError(f"interaction_embeddings: ALS returned {id_column}s that are not in the window")
        flat = factors.column("features").combine_chunks()
        vectors[at] = flat.flatten().to_numpy().reshape(len(fitted_ids), rank)
    offsets = pa.array(np.arange(0, (len(ids) + 1) * rank, rank, dtype=np.int32))
    return pa.table(
        {
            id_column: pa.array(ids, pa.int64()),
            "factors": pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1))),
            "impressions": pa.array(counts.column("impressions").to_numpy().astype(np.int64)),
            "clicks": pa.array(counts.column("clicks").to_numpy().astype(np.int64)),
        }
    )


_MAX_ID = 2**31 - 1  # ALS ids are Java ints
MICRO_UNITS = 1_000_000  # ratings summed in integer micro-units: exact, whatever the order (fold_in.py sums the same)


@dataclasses.dataclass(frozen=True)
class Window:
    """The window aggregated per (user, item) pair: the pairs (cached), ALS's ratings, counts per user and item."""

    pairs: Any
    rated: Any
    user_counts: pa.Table
    item_counts: pa.Table
    n_pairs: int


@dataclasses.dataclass(frozen=True)
class Factors:
    """The fitted factors aligned with the window's ids, and how many ratings, users and items ALS saw."""

    user_factors: pa.Table
    item_factors: pa.Table
    n_rated: int
    users_fitted: int
    items_fitted: int


def window_bounds(events, days: int):
    """The window's event count and id ranges; rejects an empty window and ids outside ALS's Java ints."""
    from pyspark.sql import functions as F

    bounds = events.agg(
        F.count("*").alias("n"),
        F.min("user_id").alias("min_user"),
        F.max("user_id").alias("max_user"),
        F.min("item_id").alias("min_item"),
        F.max("item_id").alias("max_item"),
    ).first()
    if bounds["n"] == 0:
        raise DataRejected(f"interaction_embeddings: rule non_empty_window failed: 0 events in {days} days")
    for name in ("user", "item"):
        low, high = bounds[f"min_{name}"], bounds[f"max_{name}"]
        if low < 0 or high > _MAX_ID:
            raise DataRejected(
                f"interaction_embeddings: rule {name}_id_in_int32_range failed: "
                f"observed {name}_id range [{low}, {high}]"
            )
    return bounds


def aggregate_window(events, negative_weight: float, dwell_log_scale: float) -> Window:
    """Sum each (user, item) pair's implicit rating exactly; keep for ALS the pairs it can solve."""
    from pyspark.sql import functions as F

    # Integer micro-units make the sum exact, hence independent of the shuffle's merge order.
    click_weight = F.lit(1.0) + F.log1p(F.greatest(F.col("dwell_seconds"), F.lit(0.0))) / F.lit(dwell_log_scale)
    weight = F.when(F.col("clicked") == 1, click_weight).otherwise(F.lit(-negative_weight))
    pairs = (
        events.withColumn("w", F.round(weight * F.lit(MICRO_UNITS)).cast("long"))
        .groupBy("user_id", "item_id")
        .agg(F.sum("w").alias("w"), F.count("*").alias("impressions"), F.sum("clicked").cast("long").alias("clicks"))
        .select(
            F.col("user_id").cast("int").alias("user"),
            F.col("item_id").cast("int").alias("item"),
            "w",
            "impressions",
            "clicks",
        )
        .cache()
    )
    # A net rating of exactly 0 means "no information" to implicit ALS, and Spark divides by
    # alpha*|r| for it: such pairs are left out. Spark also scales a user's (item's)
    # regularization by its number of positive ratings, so an entity with negatives only
    # would be solved unregularized (and can be singular): ALS sees only users and items with
    # at least one positive rating; the others keep their window counts and a zero vector.
    nonzero = pairs.where(F.col("w") != 0)
    positive = nonzero.where(F.col("w") > 0)
    rated = (
        nonzero.join(positive.select("user").distinct(), "user", "left_semi")
        .join(positive.select("item").distinct(), "item", "left_semi")
        .select("user", "item", (F.col("w") / F.lit(float(MICRO_UNITS))).cast("float").alias("rating"))
    )
    user_counts = _window_counts(pairs, "user", "user_id")
    item_counts = _window_counts(pairs, "item", "item_id")
    return Window(pairs, rated, user_counts, item_counts, pairs.count())


def fit_als(ratings, plan: AlsPlan, checkpointing: bool, *, iterations: int, reg: float, alpha: float, seed: int):
    """ALS (implicit feedback) with the plan's rank, blocks and checkpoint interval, and a fixed seed."""
    from pyspark.ml.recommendation import ALS

    als = ALS(
        rank=plan.rank,
        maxIter=iterations,
        regParam=reg,
        alpha=alpha,
        implicitPrefs=True,
        userCol="user",
        itemCol="item",
        ratingCol="rating",
        seed=seed,
        numUserBlocks=plan.blocks,
        numItemBlocks=plan.blocks,
        checkpointInterval=plan.checkpoint_interval if checkpointing else -1,
        nonnegative=False,
        coldStartStrategy="nan",
    )
    return als.fit(ratings)


def observed_loss(model, ratings, alpha: float):
    """The squared error and the confidence summed over the rated pairs (``sse``, ``c``)."""
    from pyspark.sql import functions as F

    # Implicit-feedback training loss on the observed pairs: confidence-weighted RMSE between
    # the preference (1 if net rating > 0 else 0) and the factors' dot product.
    predicted = model.transform(ratings).where(~F.isnan("prediction"))
    confidence = F.lit(1.0) + F.lit(alpha) * F.abs(F.col("rating"))
    preference = F.when(F.col("rating") > 0, 1.0).otherwise(0.0)
    return predicted.agg(
        F.sum(confidence * (preference - F.col("prediction")) ** 2).alias("sse"),
        F.sum(confidence).alias("c"),
    ).first()


def collect_factors(model, ratings, window: Window, rank: int) -> Factors:
    """Bring the factors to the driver as Arrow, aligned with the window's ids; release the cached data."""
    user_factors = factors_table(model.userFactors.toArrow(), window.user_counts, "user_id", rank)
    item_factors = factors_table(model.itemFactors.toArrow(), window.item_counts, "item_id", rank)
    n_rated = ratings.count()
    users_fitted, items_fitted = model.userFactors.count(), model.itemFactors.count()
    ratings.unpersist()
    window.pairs.unpersist()
    return Factors(user_factors, item_factors, n_rated, users_fitted, items_fitted)


def _window_counts(pairs, column: str, id_column: str) -> pa.Table:
    """Impressions and clicks per ``column`` over the window, collected as Arrow (one row per id)."""
    from pyspark.sql import functions as F

    counts = pairs.groupBy(column).agg(F.sum("impressions").alias("impressions"), F.sum("clicks").alias("clicks"))
    return counts.withColumnRenamed(column, id_column).toArrow()
