"""The recommendations pipeline's jobs, model quality and derived shape (merged into the code location)."""

from mltrain_assets.core.pipeline import ModelQuality, PipelineJob, define_pipeline
from mltrain_assets.pipelines.recsys import contract, report
from mltrain_assets.pipelines.recsys.assets import (
    AUC_GATE,
    interaction_embeddings,
    recommendations,
    recommender_model,
    recsys_assets,
    registered_recommender,
    user_interactions,
)
from mltrain_assets.pipelines.recsys.spec import spec

pipeline = define_pipeline(
    spec,
    assets=recsys_assets,
    ingestion=PipelineJob(
        "user_interactions_job",
        (user_interactions,),
        "Ingest one or more days of interactions (a range runs as one run).",
    ),
    stages=(
        PipelineJob(
            "recommender_job",
            (interaction_embeddings, recommender_model, registered_recommender, recommendations),
            "Embeddings, distributed training, gate, champion/challenger promotion and batch inference for a date.",
        ),
    ),
    fallback_cron="45 3 * * *",
    quality=ModelQuality(
        model=recommender_model,
        registered=registered_recommender,
        gate=AUC_GATE,
        model_name=lambda _key: contract.REGISTERED_MODEL_NAME,
    ),
    report_metrics=("auc", "users", "items"),
    summary=report.summary,
)
defs = pipeline.defs
