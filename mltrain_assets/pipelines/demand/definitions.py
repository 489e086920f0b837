"""The demand-forecasting pipeline's definitions and shape (merged into the code location)."""

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from mltrain_assets.core.partitions import daily_partitions
from mltrain_assets.core.pipeline import Pipeline, QualitySpec, Stage
from mltrain_assets.core.schedules import daily_fallback_schedule
from mltrain_assets.core.sensors import landing_sensor
from mltrain_assets.pipelines.demand import report
from mltrain_assets.pipelines.demand.assets import demand_assets
from mltrain_assets.pipelines.demand.partitions import configured_cities, daily_city_partitions
from mltrain_assets.workloads.demand import contract

# Each job's steps form a chain, so they run in the run worker's process (no per-step start-up).
ride_events_job = define_asset_job(
    "ride_events_job",
    selection=AssetSelection.assets("ride_events", "city_hour_aggregates"),
    partitions_def=daily_partitions,
    executor_def=in_process_executor,
    description="Ingest one or more landed days of rides and aggregate each to city-hours (a range runs as one run).",
)
demand_features_job = define_asset_job(
    "demand_features_job",
    selection=AssetSelection.assets("city_demand_features"),
    partitions_def=daily_partitions,
    executor_def=in_process_executor,
    description="City-hour features for one day from the window's aggregates (Spark SQL or DuckDB).",
)
demand_city_model_job = define_asset_job(
    "demand_city_model_job",
    selection=AssetSelection.assets("city_demand_model", "registered_demand_model", "demand_forecasts"),
    partitions_def=daily_city_partitions,
    executor_def=in_process_executor,
    description="Train, gate, register and forecast for one date x city.",
)

defs = Definitions(
    assets=demand_assets,
    jobs=[ride_events_job, demand_features_job, demand_city_model_job],
    sensors=[landing_sensor(contract.RIDES.name, "ride_events", ride_events_job)],
    schedules=[daily_fallback_schedule(contract.RIDES.name, "ride_events", ride_events_job, "30 3 * * *")],
)

pipeline = Pipeline(
    name="demand",
    defs=defs,
    landing_dataset=contract.RIDES.name,
    ingestion_asset="ride_events",
    ingestion_job=ride_events_job.name,
    landing_window=contract.LANDING_WINDOW,
    landing_day_assets=("city_hour_aggregates",),
    daily_assets=("city_demand_features",),
    keyed_assets=("city_demand_model", "registered_demand_model", "demand_forecasts"),
    keys=configured_cities,
    key_dimension="city",
    stages=(
        Stage(demand_features_job.name, "city_demand_features"),
        Stage(
            demand_city_model_job.name, "city_demand_model -> registered_demand_model -> demand_forecasts", per_key=True
        ),
    ),
    report_metrics=("mape", "naive_mape"),
    summary=report.summary,
    quality=QualitySpec(
        model_asset="city_demand_model",
        registered_asset="registered_demand_model",
        metric="mape",
        baseline="naive_mape",
        threshold=contract.MAPE_THRESHOLD,
        lower_is_better=True,
        gate="mape_below_threshold",
        model_name=contract.registered_model_name,
        title="Demand forecasting",
    ),
)
