"""User and item embeddings: Spark MLlib ALS (implicit feedback) over a window of interaction days.

``python -m mltrain_assets.pipelines.recsys.workloads.embeddings --params JSON`` (``EmbeddingsParams``).

Inputs are committed ``user_interactions`` versions (``events.parquet``, already validated
and deduplicated). Output: ``user_factors.parquet`` and ``item_factors.parquet`` with columns
``(user_id|item_id, factors list<float32>, impressions, clicks)``.

Determinism: the implicit rating is summed in integer micro-units (exact whatever the
shuffle order), the ratings are hash-partitioned into the plan's number of blocks and sorted
within them, and ALS runs with a fixed seed and the plan's block count, so two fits of the
same inputs give equal factors. The plan (``als_plan``) is a function of the input's size
only; checkpointing writes and rereads the item factors unchanged, so it never changes them.

Scale: checkpoints go to a scratch folder of this workload (a temp folder on a local master,
``spark.checkpoint.dir`` from the Spark conf on a cluster, whose executors need shared
storage), never into the version folder. The factors come back to the driver as Arrow
(``DataFrame.toArrow``) and are aligned with the window's ids by a vectorized join.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow as pa

from mltrain_assets.artifacts import ArtifactWriter, join_uri, require_manifest
from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.pipelines.recsys.contract import ITEM_FACTORS_FILE, USER_FACTORS_FILE
from mltrain_assets.pipelines.recsys.params import EmbeddingsParams
from mltrain_assets.workloads.common.runtime import DataRejected, Reporter, workload_main
from mltrain_assets.workloads.common.spark import SparkSettings, spark_path, spark_session
from mltrain_assets.workloads.ingest.params import EVENTS_FILE

WORKLOAD = "interaction_embeddings"
PRODUCER = "mltrain_assets.workloads.interaction_embeddings"
SHUFFLE_PARTITIONS = 4
_MAX_ID = 2**31 - 1  # ALS ids are Java ints
_MICRO = 1_000_000


def spark_events_path(uri: str, settings: SparkSettings) -> str:
    """The path Spark reads for a committed version's ``events.parquet``; refuses uncommitted versions.

    ``s3://`` inputs fail at once with a clear message unless ``settings.s3a`` says the cluster can
    read ``s3a://`` (checked before the manifest, so no storage is touched).
    """
    path = spark_path(uri.rstrip("/"), settings, WORKLOAD)
    manifest = require_manifest(uri)
    if EVENTS_FILE not in manifest["files"]:
        raise FileNotFoundError(f"{EVENTS_FILE} is not listed in the manifest of {uri}")
    return join_uri(path, EVENTS_FILE)


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


def _factors_table(factors: pa.Table, counts: pa.Table, id_column: str, rank: int) -> pa.Table:
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


class _Stopwatch:
    """Seconds per phase, each from the end of the one before (``timings_s`` of the stats)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._clock = time.monotonic()

    def lap(self, phase: str) -> None:
        self.timings[phase] = round(time.monotonic() - self._clock, 2)
        self._clock = time.monotonic()


@dataclasses.dataclass(frozen=True)
class _Window:
    """The window aggregated per (user, item) pair: the pairs (cached), ALS's ratings, counts per user and item."""

    pairs: Any
    rated: Any
    user_counts: pa.Table
    item_counts: pa.Table
    n_pairs: int


@dataclasses.dataclass(frozen=True)
class _Factors:
    """The fitted factors aligned with the window's ids, and how many ratings, users and items ALS saw."""

    user_factors: pa.Table
    item_factors: pa.Table
    n_rated: int
    users_fitted: int
    items_fitted: int


def _window_bounds(events, days: int):
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


def _aggregate_window(events, negative_weight: float, dwell_log_scale: float) -> _Window:
    """Sum each (user, item) pair's implicit rating exactly; keep for ALS the pairs it can solve."""
    from pyspark.sql import functions as F

    # Integer micro-units make the sum exact, hence independent of the shuffle's merge order.
    click_weight = F.lit(1.0) + F.log1p(F.greatest(F.col("dwell_seconds"), F.lit(0.0))) / F.lit(dwell_log_scale)
    weight = F.when(F.col("clicked") == 1, click_weight).otherwise(F.lit(-negative_weight))
    pairs = (
        events.withColumn("w", F.round(weight * F.lit(_MICRO)).cast("long"))
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
        .select("user", "item", (F.col("w") / F.lit(float(_MICRO))).cast("float").alias("rating"))
    )
    user_counts = _window_counts(pairs, "user", "user_id")
    item_counts = _window_counts(pairs, "item", "item_id")
    return _Window(pairs, rated, user_counts, item_counts, pairs.count())


def _fit_als(ratings, plan: AlsPlan, checkpointing: bool, *, iterations: int, reg: float, alpha: float, seed: int):
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


def _observed_loss(model, ratings, alpha: float):
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


def _collect_factors(model, ratings, window: _Window, rank: int) -> _Factors:
    """Bring the factors to the driver as Arrow, aligned with the window's ids; release the cached data."""
    user_factors = _factors_table(model.userFactors.toArrow(), window.user_counts, "user_id", rank)
    item_factors = _factors_table(model.itemFactors.toArrow(), window.item_counts, "item_id", rank)
    n_rated = ratings.count()
    users_fitted, items_fitted = model.userFactors.count(), model.itemFactors.count()
    ratings.unpersist()
    window.pairs.unpersist()
    return _Factors(user_factors, item_factors, n_rated, users_fitted, items_fitted)


def fit_embeddings(
    spark,
    events_paths: list[str],
    *,
    rank: int = contract.ALS_RANK,
    iterations: int = contract.ALS_ITERATIONS,
    reg: float = contract.ALS_REG,
    alpha: float = contract.ALS_ALPHA,
    seed: int = 0,
    negative_weight: float = contract.ALS_NEGATIVE_WEIGHT,
    dwell_log_scale: float = contract.ALS_DWELL_LOG_SCALE,
    plan: AlsPlan | None = None,
    checkpoint_dir: str | None = None,
) -> dict[str, Any]:
    """Fit implicit ALS on the events at ``events_paths``; returns factor tables and fit statistics.

    ``plan``: ``None`` chooses it from the window's ratings, users and items (``als_plan``).
    ``checkpoint_dir``: where Spark checkpoints when the plan asks for it; without one ALS runs
    uncheckpointed (same factors, longer lineage), and the stats say so.

    Returns ``{"user_factors": pa.Table, "item_factors": pa.Table, "stats": {...}}``.
    """
    if not events_paths:
        raise DataRejected("interaction_embeddings: no input days given")
    watch = _Stopwatch()
    events = spark.read.parquet(*events_paths).select("user_id", "item_id", "clicked", "dwell_seconds")
    bounds = _window_bounds(events, len(events_paths))
    window = _aggregate_window(events, negative_weight, dwell_log_scale)
    watch.lap("aggregate_s")

    if plan is None:
        plan = als_plan(window.n_pairs, window.user_counts.num_rows, window.item_counts.num_rows, rank)
    ratings = window.rated.repartition(plan.blocks, "user").sortWithinPartitions("user", "item").cache()
    checkpointing = plan.checkpoint_interval > 0 and checkpoint_dir is not None
    if checkpointing:
        spark.sparkContext.setCheckpointDir(checkpoint_dir)
    model = _fit_als(ratings, plan, checkpointing, iterations=iterations, reg=reg, alpha=alpha, seed=seed)
    watch.lap("als_s")
    loss = _observed_loss(model, ratings, alpha)
    watch.lap("loss_s")
    factors = _collect_factors(model, ratings, window, plan.rank)
    watch.lap("collect_s")
    stats = {
        "rank": plan.rank,
        "iterations": iterations,
        "reg": reg,
        "alpha": alpha,
        "seed": seed,
        "negative_weight": negative_weight,
        "als_plan": plan.as_dict(),
        "checkpointed": checkpointing,
        "users": factors.user_factors.num_rows,
        "items": factors.item_factors.num_rows,
        "interactions": int(bounds["n"]),
        "users_with_factors": factors.users_fitted,
        "items_with_factors": factors.items_fitted,
        "user_item_pairs": int(window.n_pairs),
        "rated_pairs": int(factors.n_rated),
        "observed_weighted_rmse": float(np.sqrt(loss["sse"] / loss["c"])) if loss["c"] else None,
        "timings_s": watch.timings,
    }
    return {"user_factors": factors.user_factors, "item_factors": factors.item_factors, "stats": stats}


def _window_counts(pairs, column: str, id_column: str) -> pa.Table:
    """Impressions and clicks per ``column`` over the window, collected as Arrow (one row per id)."""
    from pyspark.sql import functions as F

    counts = pairs.groupBy(column).agg(F.sum("impressions").alias("impressions"), F.sum("clicks").alias("clicks"))
    return counts.withColumnRenamed(column, id_column).toArrow()


def checkpoint_dir_for(settings: SparkSettings, scratch: str) -> str | None:
    """Where ALS checkpoints: ``spark.checkpoint.dir`` from the conf, else ``scratch`` on a local master.

    A cluster's executors write checkpoints where the driver reads them back, so there only a
    shared location (the conf's) works; without one ALS runs uncheckpointed (``None``).
    """
    configured = settings.conf.get("spark.checkpoint.dir")
    if configured:
        return configured
    return scratch if settings.master.startswith("local") else None


def run(params: EmbeddingsParams, reporter: Reporter) -> dict[str, Any]:
    """Fit ALS on the committed days at ``interactions_uris`` and commit the factors into ``out_uri``."""
    started = time.monotonic()
    settings = params.spark
    uris = list(params.interactions_uris)
    paths = [spark_events_path(u, settings) for u in uris]
    reporter.info(f"ALS rank={params.rank} iterations={params.iterations} over {len(paths)} days for {params.date}")
    scratch = tempfile.mkdtemp(prefix="mltrain-als-")  # this workload's own: checkpoints, never the version folder
    spark, owned = spark_session(settings, "mltrain-interaction-embeddings", SHUFFLE_PARTITIONS)
    try:
        result = fit_embeddings(
            spark,
            paths,
            rank=params.rank,
            iterations=params.iterations,
            reg=params.reg,
            alpha=params.alpha,
            seed=params.seed,
            negative_weight=params.negative_weight,
            checkpoint_dir=checkpoint_dir_for(settings, scratch),
        )
    finally:
        if owned:
            spark.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    reporter.info(f"ALS plan {result['stats']['als_plan']} (checkpointed: {result['stats']['checkpointed']})")
    writer = ArtifactWriter(
        params.out_uri,
        producer=PRODUCER,
        code_version=contract.EMBEDDINGS_CODE_VERSION,
        inputs={"user_interactions": uris},
    )
    writer.write_table(USER_FACTORS_FILE, result["user_factors"])
    writer.write_table(ITEM_FACTORS_FILE, result["item_factors"])
    summary = {
        **result["stats"],
        "date": params.date,
        "days": len(uris),
        "elapsed_s": round(time.monotonic() - started, 2),
    }
    writer.commit(summary=summary)
    reporter.info(f"committed {params.out_uri}: {summary}")
    return summary


main = workload_main(EmbeddingsParams, run)

if __name__ == "__main__":
    raise SystemExit(main())
