"""User and item embeddings: Spark MLlib ALS (implicit feedback) over a window of interaction days.

``python -m mltrain_assets.workloads.interaction_embeddings --interactions-uris '["file:///…/v=…", …]'
--date D --out-uri URI [--rank R --iterations N --reg 0.1 --alpha 10 --seed 0] [--spark-master M]``

Inputs are committed ``user_interactions`` versions (``events.parquet``, already validated
and deduplicated). Output: ``user_factors.parquet`` and ``item_factors.parquet`` with columns
``(user_id|item_id, factors list<float32>, impressions, clicks)``.

Determinism: the implicit rating is summed in integer micro-units (exact whatever the
shuffle order), the ratings are hash-partitioned into a fixed number of blocks and sorted
within them, ALS runs with a fixed seed, fixed block counts and no checkpointing, so two
fits of the same inputs give equal factors.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import pyarrow as pa

from mltrain_assets.artifacts import ArtifactWriter, filesystem, require_manifest
from mltrain_assets.workloads import recsys_config as cfg
from mltrain_assets.workloads._runtime import DataRejected, Reporter, run_workload

EVENTS_FILE = "events.parquet"
USER_FACTORS_FILE = "user_factors.parquet"
ITEM_FACTORS_FILE = "item_factors.parquet"
_MAX_ID = 2**31 - 1  # ALS ids are Java ints
_MICRO = 1_000_000


def build_spark(
    master: str | None = None, app_name: str = "mltrain-interaction-embeddings", shuffle_partitions: int = 4
):
    """A Spark session bound to loopback (see STACK.md), UI off, UTC."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    master = master or os.environ.get("MLTRAIN_SPARK_MASTER") or "local[*]"
    driver_host = os.environ.get("SPARK_DRIVER_HOST") or os.environ["SPARK_LOCAL_IP"]
    return (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.driver.host", driver_host)
        .config("spark.driver.bindAddress", driver_host)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", os.environ.get("MLTRAIN_SPARK_DRIVER_MEMORY", "2g"))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )


def spark_events_path(uri: str) -> str:
    """The path Spark reads for a committed version's ``events.parquet``; refuses uncommitted versions.

    Spark here reads ``file://`` only (no hadoop-aws): an ``s3://`` input fails at once with a
    clear message, unless ``MLTRAIN_SPARK_S3A=1`` says the cluster can read ``s3a://``.
    """
    if uri.startswith(("s3://", "s3a://")) and os.environ.get("MLTRAIN_SPARK_S3A") != "1":
        raise ValueError(
            f"interaction_embeddings reads its inputs with Spark, which here reads file:// paths only; got {uri}. "
            "On a cluster with hadoop-aws set MLTRAIN_SPARK_S3A=1 to read it as s3a://."
        )
    manifest = require_manifest(uri)
    if EVENTS_FILE not in manifest["files"]:
        raise FileNotFoundError(f"{EVENTS_FILE} is not listed in the manifest of {uri}")
    if uri.startswith(("s3://", "s3a://")):
        return "s3a://" + uri.split("://", 1)[1].rstrip("/") + "/" + EVENTS_FILE
    _, path = filesystem(uri)
    return "file://" + path.rstrip("/") + "/" + EVENTS_FILE


def _factors_table(frame, id_column: str, counts, rank: int) -> pa.Table:
    """Every id of the window, sorted, with its ALS vector (zeros when ALS left it out) and window counts."""
    pdf = frame.toPandas()
    vectors = dict(zip(pdf["id"].astype(np.int64), pdf["features"], strict=True))
    counts = counts.sort_values(id_column, kind="stable")
    ids = counts[id_column].to_numpy(dtype=np.int64)
    zeros = np.zeros(rank, np.float32)
    features = [np.asarray(vectors.get(int(i), zeros), dtype=np.float32) for i in ids]
    return pa.table(
        {
            id_column: pa.array(ids, pa.int64()),
            "factors": pa.array(features, pa.list_(pa.float32())),
            "impressions": pa.array(counts["impressions"].to_numpy(dtype=np.int64)),
            "clicks": pa.array(counts["clicks"].to_numpy(dtype=np.int64)),
        }
    )


def fit_embeddings(
    spark,
    events_paths: list[str],
    *,
    rank: int = cfg.ALS_RANK,
    iterations: int = cfg.ALS_ITERATIONS,
    reg: float = cfg.ALS_REG,
    alpha: float = cfg.ALS_ALPHA,
    seed: int = 0,
    negative_weight: float = cfg.ALS_NEGATIVE_WEIGHT,
    dwell_log_scale: float = cfg.ALS_DWELL_LOG_SCALE,
    blocks: int = cfg.ALS_BLOCKS,
) -> dict[str, Any]:
    """Fit implicit ALS on the events at ``events_paths``; returns factor tables and fit statistics.

    Returns ``{"user_factors": pa.Table, "item_factors": pa.Table, "stats": {...}}``.
    """
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    if not events_paths:
        raise DataRejected("interaction_embeddings: no input days given")
    timings: dict[str, float] = {}
    clock = time.monotonic()

    def lap(phase: str) -> None:
        nonlocal clock
        timings[phase] = round(time.monotonic() - clock, 2)
        clock = time.monotonic()

    events = spark.read.parquet(*events_paths).select("user_id", "item_id", "clicked", "dwell_seconds")
    bounds = events.agg(
        F.count("*").alias("n"),
        F.min("user_id").alias("min_user"),
        F.max("user_id").alias("max_user"),
        F.min("item_id").alias("min_item"),
        F.max("item_id").alias("max_item"),
    ).first()
    if bounds["n"] == 0:
        raise DataRejected(
            f"interaction_embeddings: rule non_empty_window failed: 0 events in {len(events_paths)} days"
        )
    for name in ("user", "item"):
        low, high = bounds[f"min_{name}"], bounds[f"max_{name}"]
        if low < 0 or high > _MAX_ID:
            raise DataRejected(
                f"interaction_embeddings: rule {name}_id_in_int32_range failed: "
                f"observed {name}_id range [{low}, {high}]"
            )

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
        .repartition(blocks, "user")
        .sortWithinPartitions("user", "item")
        .cache()
    )
    # A net rating of exactly 0 means "no information" to implicit ALS, and Spark divides by
    # alpha*|r| for it: such pairs are left out. Spark also scales a user's (item's)
    # regularization by its number of positive ratings, so an entity with negatives only
    # would be solved unregularized (and can be singular): ALS sees only users and items with
    # at least one positive rating; the others keep their window counts and a zero vector.
    nonzero = pairs.where(F.col("w") != 0)
    positive = nonzero.where(F.col("w") > 0)
    ratings = (
        nonzero.join(positive.select("user").distinct(), "user", "left_semi")
        .join(positive.select("item").distinct(), "item", "left_semi")
        .select("user", "item", (F.col("w") / F.lit(float(_MICRO))).cast("float").alias("rating"))
        .repartition(blocks, "user")
        .sortWithinPartitions("user", "item")
        .cache()
    )
    n_pairs = pairs.count()
    lap("aggregate_s")

    als = ALS(
        rank=rank,
        maxIter=iterations,
        regParam=reg,
        alpha=alpha,
        implicitPrefs=True,
        userCol="user",
        itemCol="item",
        ratingCol="rating",
        seed=seed,
        numUserBlocks=blocks,
        numItemBlocks=blocks,
        checkpointInterval=-1,
        nonnegative=False,
        coldStartStrategy="nan",
    )
    model = als.fit(ratings)
    lap("als_s")

    # Implicit-feedback training loss on the observed pairs: confidence-weighted RMSE between
    # the preference (1 if net rating > 0 else 0) and the factors' dot product.
    predicted = model.transform(ratings).where(~F.isnan("prediction"))
    confidence = F.lit(1.0) + F.lit(alpha) * F.abs(F.col("rating"))
    preference = F.when(F.col("rating") > 0, 1.0).otherwise(0.0)
    loss = predicted.agg(
        F.sum(confidence * (preference - F.col("prediction")) ** 2).alias("sse"),
        F.sum(confidence).alias("c"),
    ).first()
    lap("loss_s")

    user_counts = pairs.groupBy("user").agg(F.sum("impressions").alias("impressions"), F.sum("clicks").alias("clicks"))
    item_counts = pairs.groupBy("item").agg(F.sum("impressions").alias("impressions"), F.sum("clicks").alias("clicks"))
    user_counts = user_counts.withColumnRenamed("user", "user_id").toPandas()
    item_counts = item_counts.withColumnRenamed("item", "item_id").toPandas()
    user_factors = _factors_table(model.userFactors, "user_id", user_counts, rank)
    item_factors = _factors_table(model.itemFactors, "item_id", item_counts, rank)
    n_rated = ratings.count()
    users_fitted, items_fitted = model.userFactors.count(), model.itemFactors.count()
    ratings.unpersist()
    pairs.unpersist()
    lap("collect_s")
    stats = {
        "rank": rank,
        "iterations": iterations,
        "reg": reg,
        "alpha": alpha,
        "seed": seed,
        "negative_weight": negative_weight,
        "users": user_factors.num_rows,
        "items": item_factors.num_rows,
        "interactions": int(bounds["n"]),
        "users_with_factors": users_fitted,
        "items_with_factors": items_fitted,
        "user_item_pairs": int(n_pairs),
        "rated_pairs": int(n_rated),
        "observed_weighted_rmse": float(np.sqrt(loss["sse"] / loss["c"])) if loss["c"] else None,
        "timings_s": timings,
    }
    return {"user_factors": user_factors, "item_factors": item_factors, "stats": stats}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--interactions-uris", required=True, help="JSON list of committed user_interactions version URIs")
    p.add_argument("--date", required=True, help="partition date D; the window is the days before it")
    p.add_argument("--out-uri", required=True)
    p.add_argument("--rank", type=int, default=cfg.ALS_RANK)
    p.add_argument("--iterations", type=int, default=cfg.ALS_ITERATIONS)
    p.add_argument("--reg", type=float, default=cfg.ALS_REG)
    p.add_argument("--alpha", type=float, default=cfg.ALS_ALPHA)
    p.add_argument("--negative-weight", type=float, default=cfg.ALS_NEGATIVE_WEIGHT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spark-master", default=None, help="default: $MLTRAIN_SPARK_MASTER or local[*]")
    return p


def main_body(args: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    started = time.monotonic()
    uris = json.loads(args.interactions_uris)
    if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
        raise ValueError("--interactions-uris must be a JSON list of URIs")
    paths = [spark_events_path(u) for u in uris]
    reporter.info(f"ALS rank={args.rank} iterations={args.iterations} over {len(paths)} days for {args.date}")
    spark = build_spark(args.spark_master)
    try:
        result = fit_embeddings(
            spark,
            paths,
            rank=args.rank,
            iterations=args.iterations,
            reg=args.reg,
            alpha=args.alpha,
            seed=args.seed,
            negative_weight=args.negative_weight,
        )
    finally:
        spark.stop()
    writer = ArtifactWriter(
        args.out_uri,
        producer="mltrain_assets.workloads.interaction_embeddings",
        code_version=cfg.EMBEDDINGS_CODE_VERSION,
        inputs={"user_interactions": uris},
    )
    writer.write_table(USER_FACTORS_FILE, result["user_factors"])
    writer.write_table(ITEM_FACTORS_FILE, result["item_factors"])
    summary = {
        **result["stats"],
        "date": args.date,
        "days": len(uris),
        "elapsed_s": round(time.monotonic() - started, 2),
    }
    writer.commit(summary=summary)
    reporter.info(f"committed {args.out_uri}: {summary}")
    return summary


def main() -> int:
    return run_workload("interaction_embeddings", parser(), main_body)


if __name__ == "__main__":
    raise SystemExit(main())
