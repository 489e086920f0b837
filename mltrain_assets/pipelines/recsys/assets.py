"""Recommendations: interactions -> Spark ALS embeddings -> DDP-trained ranker -> champion/challenger -> top-K.

Timeline for partition D: embeddings (ALS factors, window counts) learn from D-14..D-8, the model
from D-7..D-1 over those frozen features, so no row's features carry its own click; day D is
held out to measure AUC, so nothing learns from the day it is judged on. Windows,
thresholds, names and code versions come from ``pipelines/recsys/contract.py``.
"""

from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.pipelines.recsys.params import EmbeddingsParams, EvaluateParams, RecommendParams, TrainParams
from mltrain_assets.pipelines.recsys.spec import spec
from mltrain_assets.sdk import (
    ArtifactRef,
    AssetExecutionContext,
    Registration,
    Step,
    landing_ingestion_asset,
    metric_above,
    model_stage,
    served_model_uri,
    window_input,
    workload_asset,
)

# The days of user_interactions each step reads for partition D.
EMBEDDINGS_DAYS = window_input(contract.EMBEDDINGS_WINDOW)
MODEL_DAYS = window_input(contract.MODEL_WINDOW)

# The ranker: gated on held-out AUC, registered as one model.
ranker = model_stage(
    spec, metric_above("auc_above_threshold", "auc", contract.AUC_THRESHOLD), contract.REGISTERED_MODEL_NAME
)

user_interactions = landing_ingestion_asset(
    spec,
    name="user_interactions",
    description=(
        "One UTC day of user-item impressions: validated, deduplicated by event_id, versioned parquet. "
        "Its blocking check `landed_complete` holds the day back until all 24 hourly buckets arrived with "
        "plausible counts; its freshness policy (the landed layer's) warns when no new day arrived for 26 h."
    ),
)


@workload_asset(spec, EmbeddingsParams, layer="embeddings", ins={"user_interactions": EMBEDDINGS_DAYS})
def interaction_embeddings(context: AssetExecutionContext, user_interactions: dict[str, ArtifactRef]) -> Step:
    """User and item ALS factors (Spark MLlib, implicit feedback) over the embeddings window (D-14..D-8),
    which ends the week before the model's training window."""
    dates = list(user_interactions)
    return Step(
        EmbeddingsParams(
            date=context.partition_key, interactions_uris=tuple(r.uri for r in user_interactions.values())
        ),
        inputs={f"user_interactions/{d}": r for d, r in user_interactions.items()},
        metadata=lambda _: {"window": f"{dates[0]}..{dates[-1]}"},
    )


@ranker.model(TrainParams, ins={"user_interactions": MODEL_DAYS})
def recommender_model(
    context: AssetExecutionContext, interaction_embeddings: ArtifactRef, user_interactions: dict[str, ArtifactRef]
) -> Step:
    """Two-tower ranker trained with DistributedDataParallel (torchrun), checkpointed per epoch; AUC on day D."""
    date = context.partition_key
    train = {d: r for d, r in user_interactions.items() if d != date}
    held_out = user_interactions[date]
    return Step(
        TrainParams(
            date=date,
            interactions_uris=tuple(r.uri for r in train.values()),
            eval_uri=held_out.uri,
            embeddings_uri=interaction_embeddings.uri,
        ),
        inputs={"interaction_embeddings": interaction_embeddings, "eval": held_out}
        | {f"user_interactions/{d}": r for d, r in train.items()},
        metadata=lambda ref: {"resumed_from_epoch": ref.metadata.get("resumed_from_epoch", 0)},
    )


@ranker.registration(required_resource_keys=("compute",))
def registered_recommender(
    context: AssetExecutionContext,
    recommender_model: ArtifactRef,
    interaction_embeddings: ArtifactRef,
    user_interactions: ArtifactRef,
) -> Registration:
    """The model registered as `recommender` with lineage tags; `staging` moves to it only if it beats (or ties)
    the current `staging` version on the same held-out day.
    """
    name = contract.REGISTERED_MODEL_NAME

    def auc_of(model_uri: str) -> float:
        result = context.resources.compute.run(
            context, EvaluateParams(model_uri=model_uri, eval_uri=user_interactions.uri)
        )
        return float(result.summary["auc"])

    def compare_with_champion(champion_version: str):
        champion_auc = auc_of(f"models:/{name}/{champion_version}")
        challenger_auc = auc_of(recommender_model.metadata["model_artifact_uri"])
        return challenger_auc >= champion_auc, {
            "champion_version": champion_version,
            "champion_auc": champion_auc,
            "challenger_auc": challenger_auc,
            "evaluated_on": user_interactions.partition_key,
        }

    return Registration(
        recommender_model.metadata["model_artifact_uri"],
        upstream={
            "recommender_model": recommender_model,
            "interaction_embeddings": interaction_embeddings,
            "eval": user_interactions,
        },
        compare_with_champion=compare_with_champion,
    )


@workload_asset(spec, RecommendParams, layer="inference")
def recommendations(context: AssetExecutionContext, registered_recommender: ArtifactRef) -> Step:
    """Top-K items per user (``TOP_K``: 20) from the `staging` recommender; runs when a version is promoted."""
    model_uri = served_model_uri(registered_recommender)
    return Step(
        RecommendParams(model_uri=model_uri), inputs={"model": model_uri}, metadata=lambda _: {"model_uri": model_uri}
    )
