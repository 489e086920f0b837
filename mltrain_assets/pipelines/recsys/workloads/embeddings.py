"""User and item embeddings: Spark MLlib ALS (implicit feedback) over a window of interaction days.

``python -m mltrain_assets.pipelines.recsys.workloads.embeddings --params JSON`` (``EmbeddingsParams``).

Inputs are committed ``user_interactions`` versions (``events.parquet``, already validated
and deduplicated). Output: ``user_factors.parquet`` and ``item_factors.parquet`` with columns
``(user_id|item_id, factors list<float32>, impressions, clicks)``.

Determinism: the implicit rating is summed in integer micro-units (exact whatever the
shuffle order), the ratings are hash-partitioned into the plan's number of blocks and sorted
within them, and ALS runs with a fixed seed and the plan's block count, so two fits of the
same inputs give equal factors. The plan (``als.als_plan``) is a function of the input's size
only; checkpointing writes and rereads the item factors unchanged, so it never changes them.
The ALS steps themselves are ``als.py``; this module runs them and commits the factors.

Scale: checkpoints go to a scratch folder of this workload (a temp folder on a local master,
``spark.checkpoint.dir`` from the Spark conf on a cluster, whose executors need shared
storage), never into the version folder; on Spark Connect (``sc://``, ALS runs through ``pyspark.ml``'s
Connect client) the server's own ``spark.checkpoint.dir``, if it has one. The factors come back to the driver as Arrow
(``DataFrame.toArrow``) and are aligned with the window's ids by a vectorized join.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from typing import Any

import numpy as np

from mltrain_assets.artifacts import ArtifactWriter, join_uri, require_manifest
from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.pipelines.recsys.contract import ITEM_FACTORS_FILE, USER_FACTORS_FILE
from mltrain_assets.pipelines.recsys.params import EmbeddingsParams
from mltrain_assets.pipelines.recsys.workloads.als import (
    AlsPlan,
    aggregate_window,
    als_plan,
    collect_factors,
    fit_als,
    observed_loss,
    window_bounds,
)
from mltrain_assets.workloads.common.runtime import DataRejected, Reporter, workload_main
from mltrain_assets.workloads.common.spark import SparkSettings, spark_path, spark_session
from mltrain_assets.workloads.common.spark_connect import is_connect_session
from mltrain_assets.workloads.ingest.params import EVENTS_FILE

WORKLOAD = "interaction_embeddings"
PRODUCER = "mltrain_assets.workloads.interaction_embeddings"
SHUFFLE_PARTITIONS = 4


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


class _Stopwatch:
    """Seconds per phase, each from the end of the one before (``timings_s`` of the stats)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._clock = time.monotonic()

    def lap(self, phase: str) -> None:
        self.timings[phase] = round(time.monotonic() - self._clock, 2)
        self._clock = time.monotonic()


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
    bounds = window_bounds(events, len(events_paths))
    window = aggregate_window(events, negative_weight, dwell_log_scale)
    watch.lap("aggregate_s")

    if plan is None:
        plan = als_plan(window.n_pairs, window.user_counts.num_rows, window.item_counts.num_rows, rank)
    ratings = window.rated.repartition(plan.blocks, "user").sortWithinPartitions("user", "item").cache()
    if is_connect_session(spark):  # a Connect client cannot set one: the server's own spark.checkpoint.dir, if any
        checkpoint_dir = spark.conf.get("spark.checkpoint.dir", None) or None
    checkpointing = plan.checkpoint_interval > 0 and checkpoint_dir is not None
    if checkpointing and not is_connect_session(spark):
        spark.sparkContext.setCheckpointDir(checkpoint_dir)
    model = fit_als(ratings, plan, checkpointing, iterations=iterations, reg=reg, alpha=alpha, seed=seed)
    watch.lap("als_s")
    loss = observed_loss(model, ratings, alpha)
    watch.lap("loss_s")
    factors = collect_factors(model, ratings, window, plan.rank)
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
        code_version=EmbeddingsParams.code_version,
        inputs={"user_interactions": uris},
    )
    writer.write_table(USER_FACTORS_FILE, result["user_factors"])
    writer.write_table(ITEM_FACTORS_FILE, result["item_factors"])
    summary = {
        **result["stats"],
        # What training's fresh user vectors are solved with (fold_in.AlsSettings): the same ratings and settings.
        "als_settings": {
            "reg": params.reg,
            "alpha": params.alpha,
            "negative_weight": params.negative_weight,
            "dwell_log_scale": contract.ALS_DWELL_LOG_SCALE,
        },
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
