"""Jobs that group assets by partitioning, for schedules, sensors and the demo.

Each job's steps form a chain, so they run in the run worker's process: no per-step
process start-up; the heavy work is in the data-plane workloads anyway.
"""

from dagster import AssetSelection, define_asset_job, in_process_executor

from mltrain_assets.partitions import daily_city_partitions, daily_partitions

ride_events_job = define_asset_job(
    "ride_events_job",
    selection=AssetSelection.assets("ride_events"),
    partitions_def=daily_partitions,
    executor_def=in_process_executor,
    description="Ingest one or more days of rides (a range runs as one run).",
)
demand_features_job = define_asset_job(
    "demand_features_job",
    selection=AssetSelection.assets("city_demand_features"),
    partitions_def=daily_partitions,
    executor_def=in_process_executor,
    description="City-hour features for one day (Spark).",
)
demand_city_model_job = define_asset_job(
    "demand_city_model_job",
    selection=AssetSelection.assets("city_demand_model", "registered_demand_model", "demand_forecasts"),
    partitions_def=daily_city_partitions,
    executor_def=in_process_executor,
    tags={"mltrain/workload": "training"},
    description="Train, gate, register and forecast for one date x city.",
)

demand_jobs = [ride_events_job, demand_features_job, demand_city_model_job]

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
    tags={"mltrain/workload": "training"},
    description="Embeddings, distributed training, gate, champion/challenger promotion and batch inference for a date.",
)

recsys_jobs = [user_interactions_job, recommender_job]
