"""The demand-forecasting pipeline's jobs, model quality and derived shape (merged into the code location)."""

from mltrain_assets.core.pipeline import ModelQuality, PipelineJob, define_pipeline
from mltrain_assets.pipelines.demand import contract, report
from mltrain_assets.pipelines.demand.assets import (
    MAPE_GATE,
    city_demand_features,
    city_demand_model,
    city_hour_aggregates,
    demand_assets,
    demand_forecasts,
    registered_demand_model,
    ride_events,
)
from mltrain_assets.pipelines.demand.partitions import configured_cities
from mltrain_assets.pipelines.demand.spec import spec

pipeline = define_pipeline(
    spec,
    assets=demand_assets,
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
    quality=ModelQuality(
        model=city_demand_model,
        registered=registered_demand_model,
        gate=MAPE_GATE,
        model_name=contract.registered_model_name,
    ),
    report_metrics=("mape", "naive_mape"),
    summary=report.summary,
    keys=configured_cities,  # MLTRAIN_CITIES as set now (the partitions definition holds it as loaded)
)
defs = pipeline.defs
