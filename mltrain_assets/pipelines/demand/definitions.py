"""The demand-forecasting pipeline's jobs, model quality and derived shape (merged into the code location)."""

from mltrain_assets.pipelines.demand import report
from mltrain_assets.pipelines.demand.assets import (
    city_demand_features,
    city_demand_model,
    city_hour_aggregates,
    demand_forecasts,
    forecaster,
    registered_demand_model,
    ride_events,
)
from mltrain_assets.pipelines.demand.spec import spec
from mltrain_assets.sdk import PipelineJob, define_pipeline

pipeline = define_pipeline(
    spec,
    ingestion=PipelineJob(
        "ride_events_job",
        (ride_events, city_hour_aggregates),
        "Ingest one or more landed days of rides and aggregate each to city-hours (a range runs as one run).",
    ),
    stages=(
        PipelineJob(
            "demand_features_job",
            (city_demand_features,),
            "City-hour features for one day from the window's aggregates (Spark SQL or DuckDB).",
        ),
        PipelineJob(
            "demand_city_model_job",
            (city_demand_model, registered_demand_model, demand_forecasts),
            "Train, gate, register and forecast for one date x city.",
        ),
    ),
    fallback_cron="30 3 * * *",
    quality=forecaster.quality,
    report_metrics=("mape", "naive_mape"),
    summary=report.summary,
)
defs = pipeline.defs
