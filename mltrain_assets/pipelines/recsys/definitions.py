"""The recommendations pipeline's jobs, model quality and derived shape (merged into the code location)."""

from mltrain_assets.pipelines.recsys import report
from mltrain_assets.pipelines.recsys.assets import (
    interaction_embeddings,
    ranker,
    recommendations,
    recommender_model,
    registered_recommender,
    user_interactions,
)
from mltrain_assets.pipelines.recsys.spec import spec
from mltrain_assets.sdk import PipelineJob, define_pipeline

pipeline = define_pipeline(
    spec,
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
    quality=ranker.quality,
    report_metrics=("auc", "users", "items"),
    summary=report.summary,
)
defs = pipeline.defs
