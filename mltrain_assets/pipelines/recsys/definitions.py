"""The recommendations pipeline's definitions and shape (merged into the code location)."""

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from mltrain_assets.core.partitions import daily_partitions
from mltrain_assets.core.pipeline import Pipeline, QualitySpec, Stage
from mltrain_assets.core.schedules import daily_fallback_schedule
from mltrain_assets.core.sensors import landing_sensor
from mltrain_assets.pipelines.recsys import report
from mltrain_assets.pipelines.recsys.assets import recsys_assets
from mltrain_assets.workloads.recsys import contract

user_interactions_job = define_asset_job(
    "user_interactions_job",
    selection=AssetSelection.assets("user_interactions"),
    partitions_def=daily_partitions,
    executor_def=in_process_executor,
    description="Ingest one or more days of interactions (a range runs as one run).",
)
recommender_job = define_asset_job(
    "recommender_job",
    selection=AssetSelection.assets(
        "interaction_embeddings", "recommender_model", "registered_recommender", "recommendations"
    ),
    partitions_def=daily_partitions,
    executor_def=in_process_executor,
    description="Embeddings, distributed training, gate, champion/challenger promotion and batch inference for a date.",
)

defs = Definitions(
    assets=recsys_assets,
    jobs=[user_interactions_job, recommender_job],
    sensors=[landing_sensor(contract.INTERACTIONS.name, "user_interactions", user_interactions_job)],
    schedules=[
        daily_fallback_schedule(contract.INTERACTIONS.name, "user_interactions", user_interactions_job, "45 3 * * *")
    ],
)

pipeline = Pipeline(
    name="recsys",
    defs=defs,
    landing_dataset=contract.INTERACTIONS.name,
    ingestion_asset="user_interactions",
    ingestion_job=user_interactions_job.name,
    landing_window=contract.LANDING_WINDOW,
    daily_assets=("interaction_embeddings", "recommender_model", "registered_recommender", "recommendations"),
    stages=(
        Stage(
            recommender_job.name,
            "interaction_embeddings -> recommender_model -> registered_recommender -> recommendations",
        ),
    ),
    report_metrics=("auc", "users", "items"),
    summary=report.summary,
    quality=QualitySpec(
        model_asset="recommender_model",
        registered_asset="registered_recommender",
        metric="auc",
        threshold=contract.AUC_THRESHOLD,
        lower_is_better=False,
        gate="auc_above_threshold",
        model_name=lambda _key: contract.REGISTERED_MODEL_NAME,
        title="Recommendations",
    ),
)
