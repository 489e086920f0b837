"""Recommendations: interactions -> Spark ALS embeddings -> DDP-trained ranker -> champion/challenger -> top-K.

Timeline for partition D: embeddings and the model learn from the 7 days before D; day D
is held out to measure AUC, so nothing learns from the day it is judged on.
"""

import datetime as dt
import json

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    FreshnessPolicy,
    Output,
    TimeWindowPartitionMapping,
    asset,
)

from mltrain_assets.artifacts import ArtifactRef
from mltrain_assets.assets.ingestion import landing_ingestion_asset
from mltrain_assets.assets.promotion import register_and_promote, served_model_uri, snapshot_with_upstream
from mltrain_assets.assets.steps import (
    DATA_PLANE_RETRY,
    cli_args,
    require_gates_passed,
    require_window,
    run_versioned_step,
    versioned_output,
)
from mltrain_assets.automation import when_upstream_ready
from mltrain_assets.checks.metric_gates import AUC_THRESHOLD, metric_above
from mltrain_assets.partitions import daily_partitions
from mltrain_assets.resources.compute import ComputeBackend
from mltrain_assets.resources.storage import ArtifactStorage
from mltrain_assets.resources.tracking import ModelRegistry
from mltrain_assets.workloads import recsys_config

GROUP = "recommendations"
WINDOW = recsys_config.EMBEDDING_WINDOW_DAYS
EVALUATE_WORKLOAD = "mltrain_assets.workloads.evaluate_recommender"

user_interactions = landing_ingestion_asset(
    name="user_interactions",
    dataset="interactions",
    group_name=GROUP,
    description=(
        "One UTC day of user-item impressions: validated, deduplicated by event_id, versioned parquet. "
        "Blocking freshness gate: all 24 hourly buckets of the day arrived with plausible counts."
    ),
    # A day is due by the end of the next day; warn after 26 hours without a new day.
    freshness_policy=FreshnessPolicy.time_window(
        fail_window=dt.timedelta(hours=48), warn_window=dt.timedelta(hours=26)
    ),
)


def _days_before(date: str, count: int) -> list[str]:
    day = dt.date.fromisoformat(date)
    return [(day - dt.timedelta(days=offset)).isoformat() for offset in range(count, 0, -1)]


@asset(
    partitions_def=daily_partitions,
    ins={
        "user_interactions": AssetIn(
            partition_mapping=TimeWindowPartitionMapping(start_offset=-WINDOW, end_offset=-1),
            metadata={"allow_missing_partitions": True},
        )
    },
    code_version=recsys_config.EMBEDDINGS_CODE_VERSION,
    group_name=GROUP,
    kinds={"spark"},
    pool="spark",
    retry_policy=DATA_PLANE_RETRY,
    automation_condition=when_upstream_ready(),
    description=f"User and item ALS factors (Spark MLlib, implicit feedback) over the {WINDOW} days before the date.",
)
def interaction_embeddings(
    context: AssetExecutionContext, user_interactions, storage: ArtifactStorage, compute: ComputeBackend
) -> Output[ArtifactRef]:
    window = require_window(
        context, "user_interactions", user_interactions, _days_before(context.partition_key, WINDOW)
    )
    uris = [ref.uri for ref in window.values()]
    ref, reused = run_versioned_step(
        context,
        storage=storage,
        compute=compute,
        partition_key=context.partition_key,
        inputs={f"user_interactions/{d}": r for d, r in window.items()},
        workload="mltrain_assets.workloads.interaction_embeddings",
        build_args=lambda out: cli_args(
            interactions_uris=json.dumps(uris),
            date=context.partition_key,
            out_uri=out,
            spark_master=compute.spark_master,
        ),
        timeout_s=3600,
        profile="spark",
    )
    return versioned_output(ref, reused, {"window": f"{next(iter(window))}..{list(window)[-1]}"})


@asset(
    partitions_def=daily_partitions,
    ins={
        "user_interactions": AssetIn(
            partition_mapping=TimeWindowPartitionMapping(start_offset=-WINDOW, end_offset=0),
            metadata={"allow_missing_partitions": True},
        )
    },
    code_version=recsys_config.TRAIN_CODE_VERSION,
    group_name=GROUP,
    kinds={"pytorch", "mlflow"},
    pool="training",
    retry_policy=DATA_PLANE_RETRY,
    automation_condition=when_upstream_ready(),
    check_specs=[
        AssetCheckSpec(
            "auc_above_threshold",
            asset="recommender_model",
            blocking=True,
            description=f"AUC on the held-out day > {AUC_THRESHOLD}; a failure blocks registration and promotion.",
        )
    ],
    description="Two-tower ranker trained with DistributedDataParallel (torchrun), checkpointed per epoch; AUC on day D.",
)
def recommender_model(
    context: AssetExecutionContext,
    interaction_embeddings: ArtifactRef,
    user_interactions,
    storage: ArtifactStorage,
    compute: ComputeBackend,
):
    date = context.partition_key
    window = require_window(context, "user_interactions", user_interactions, [*_days_before(date, WINDOW), date])
    eval_ref = window.pop(date)
    train_uris = [ref.uri for ref in window.values()]
    ref, reused = run_versioned_step(
        context,
        storage=storage,
        compute=compute,
        partition_key=date,
        inputs={"interaction_embeddings": interaction_embeddings, "eval": eval_ref}
        | {f"user_interactions/{d}": r for d, r in window.items()},
        workload="mltrain_assets.workloads.train_recommender",
        build_args=lambda out: cli_args(
            interactions_uris=json.dumps(train_uris),
            eval_uri=eval_ref.uri,
            embeddings_uri=interaction_embeddings.uri,
            date=date,
            out_uri=out,
            nproc=recsys_config.TRAIN_NPROC,
        ),
        timeout_s=3600,
        profile="training",
    )
    gate = metric_above("recommender_model", date, "auc", ref.metadata.get("auc"), AUC_THRESHOLD)
    ref.metadata["gate_failures"] = gate.violations
    yield versioned_output(ref, reused, {"resumed_from_epoch": ref.metadata.get("resumed_from_epoch", 0)})
    yield AssetCheckResult(
        check_name="auc_above_threshold",
        passed=gate.passed,
        severity=AssetCheckSeverity.ERROR,
        description=gate.describe(),
        metadata={"auc": ref.metadata.get("auc"), "threshold": AUC_THRESHOLD},
    )


@asset(
    partitions_def=daily_partitions,
    code_version="1",
    group_name=GROUP,
    kinds={"mlflow"},
    retry_policy=DATA_PLANE_RETRY,
    automation_condition=when_upstream_ready(),
    description=(
        "The model registered as `recommender` with lineage tags; `staging` moves to it only if it beats "
        "(or ties) the current `staging` version on the same held-out day."
    ),
)
def registered_recommender(
    context: AssetExecutionContext,
    recommender_model: ArtifactRef,
    interaction_embeddings: ArtifactRef,
    user_interactions: ArtifactRef,
    compute: ComputeBackend,
    registry: ModelRegistry,
) -> Output[ArtifactRef]:
    require_gates_passed(context, {"recommender_model": recommender_model, "user_interactions": user_interactions})
    name = recsys_config.REGISTERED_MODEL_NAME

    def auc_of(model_uri: str) -> float:
        args = cli_args(model_uri=model_uri, eval_uri=user_interactions.uri)
        return float(compute.run_workload(context, EVALUATE_WORKLOAD, args, timeout_s=900).summary["auc"])

    def compare_with_champion(champion_version: str):
        champion_auc = auc_of(f"models:/{name}/{champion_version}")
        challenger_auc = auc_of(recommender_model.metadata["model_artifact_uri"])
        return challenger_auc >= champion_auc, {
            "champion_version": champion_version,
            "champion_auc": champion_auc,
            "challenger_auc": challenger_auc,
            "evaluated_on": user_interactions.partition_key,
        }

    snapshot = snapshot_with_upstream(
        {
            "recommender_model": recommender_model,
            "interaction_embeddings": interaction_embeddings,
            "eval": user_interactions,
        }
    )
    return register_and_promote(
        context,
        registry=registry,
        model_name=name,
        model_ref=recommender_model,
        model_uri=recommender_model.metadata["model_artifact_uri"],
        data_snapshot=snapshot,
        score_metadata={"auc": recommender_model.metadata.get("auc")},
        compare_with_champion=compare_with_champion,
    )


@asset(
    partitions_def=daily_partitions,
    code_version=recsys_config.RECOMMEND_CODE_VERSION,
    group_name=GROUP,
    kinds={"pytorch", "parquet"},
    retry_policy=DATA_PLANE_RETRY,
    automation_condition=when_upstream_ready(),
    description=f"Top-{recsys_config.TOP_K} items per user from the `staging` recommender; runs when a version is promoted.",
)
def recommendations(
    context: AssetExecutionContext,
    registered_recommender: ArtifactRef,
    storage: ArtifactStorage,
    compute: ComputeBackend,
) -> Output[ArtifactRef]:
    model_uri = served_model_uri(registered_recommender)
    ref, reused = run_versioned_step(
        context,
        storage=storage,
        compute=compute,
        partition_key=context.partition_key,
        inputs={"model": model_uri},
        workload="mltrain_assets.workloads.recommend",
        build_args=lambda out: cli_args(model_uri=model_uri, out_uri=out, top_k=recsys_config.TOP_K),
        timeout_s=1800,
    )
    return versioned_output(ref, reused, {"model_uri": model_uri})


recsys_assets = [user_interactions, interaction_embeddings, recommender_model, registered_recommender, recommendations]
