"""Demand forecasting: ride events -> city-hour aggregates -> features -> LightGBM per city -> registry -> forecasts.

Thin control-plane assets: each builds its workload's typed params from input references and
hands them to ``run_versioned_step``. Windows, thresholds, names and code versions come from
the pipeline contract (``pipelines/demand/contract.py``); the heavy code is in
``workloads/`` beside them.
"""

from mltrain_assets.pipelines.demand import contract
from mltrain_assets.pipelines.demand.params import AggregatesParams, FeaturesParams, ForecastParams, TrainParams
from mltrain_assets.pipelines.demand.partitions import daily_city_partitions
from mltrain_assets.pipelines.demand.spec import spec
from mltrain_assets.sdk import (
    ENGINE_PARITY,
    ArtifactRef,
    AssetExecutionContext,
    RangeStep,
    Registration,
    Step,
    landing_ingestion_asset,
    metric_below,
    model_stage,
    same_days_input,
    served_model_uri,
    when_landed_day_ready,
    window_input,
    workload_asset,
)

AGGREGATES_WINDOW = window_input(contract.FEATURES_WINDOW)  # the days of aggregates features[D] reads

# The per-city model: gated on held-out MAPE (the naive baseline's shown beside it), registered per city.
forecaster = model_stage(
    spec,
    metric_below("mape_below_threshold", "mape", contract.MAPE_THRESHOLD, context=("naive_mape",)),
    contract.registered_model_name,
)

ride_events = landing_ingestion_asset(
    spec,
    name="ride_events",
    description="One UTC day of ride events from the landing zone: validated, deduplicated by ride_id, versioned parquet.",
)


@workload_asset(
    spec,
    AggregatesParams,
    layer="aggregates",
    over_range=True,
    ins={"ride_events": same_days_input()},
    automation_condition=when_landed_day_ready(),
    gates=[ENGINE_PARITY],
)
def city_hour_aggregates(context: AssetExecutionContext, ride_events: dict[str, ArtifactRef]) -> RangeStep:
    """One day of ride_events reduced to city-hour aggregates (Spark SQL or DuckDB, same SQL), once: every features
    partition whose window holds the day reads these rows, never the raw events.
    """
    # A range run (backfill, demo) aggregates every date in one launch, each raw day once.
    return RangeStep(
        inputs_by_date={date: {"ride_events": ride_events[date]} for date in context.partition_keys},
        versioned=AggregatesParams(),
        params_for=lambda targets: AggregatesParams(
            rides_uris={date: ride_events[date].uri for date in targets}, targets=targets
        ),
        built_key="dates_aggregated_now",
    )


@workload_asset(
    spec, FeaturesParams, layer="features", ins={"city_hour_aggregates": AGGREGATES_WINDOW}, gates=[ENGINE_PARITY]
)
def city_demand_features(context: AssetExecutionContext, city_hour_aggregates: dict[str, ArtifactRef]) -> Step:
    """~200 features per city-hour over the trailing window of city_hour_aggregates (``FEATURES_WINDOW``:
    35 days), Spark SQL or DuckDB, same SQL."""
    dates = list(city_hour_aggregates)
    return Step(
        FeaturesParams(date=context.partition_key, aggregates_uris=tuple(r.uri for r in city_hour_aggregates.values())),
        inputs={f"city_hour_aggregates/{d}": ref for d, ref in city_hour_aggregates.items()},
        metadata=lambda _: {"window": f"{dates[0]}..{dates[-1]}"},
    )


@forecaster.model(TrainParams, partitions_def=daily_city_partitions)
def city_demand_model(context: AssetExecutionContext, city_demand_features: ArtifactRef) -> Step:
    """LightGBM demand model for one city and date, tracked in MLflow; gated on held-out MAPE."""
    keys = context.partition_key.keys_by_dimension
    return Step(
        TrainParams(date=keys["date"], city=keys["city"], features_uri=city_demand_features.uri),
        inputs={"city_demand_features": city_demand_features},
        metadata=lambda ref: {"mlflow_run": ref.metadata.get("mlflow_run_id", "")},
    )


@forecaster.registration
def registered_demand_model(
    context: AssetExecutionContext, city_demand_model: ArtifactRef, city_demand_features: ArtifactRef
) -> Registration:
    """The city model registered as `demand-forecast-{city}` with lineage tags, aliased `staging`."""
    return Registration(
        city_demand_model.metadata["mlflow_model_uri"],
        upstream={"city_demand_model": city_demand_model, "city_demand_features": city_demand_features},
    )


@workload_asset(spec, ForecastParams, layer="inference", partitions_def=daily_city_partitions)
def demand_forecasts(
    context: AssetExecutionContext, registered_demand_model: ArtifactRef, city_demand_features: ArtifactRef
) -> Step:
    """Next-day hourly demand forecasts for one city from its `staging` model."""
    keys = context.partition_key.keys_by_dimension
    model_uri = served_model_uri(registered_demand_model)
    return Step(
        ForecastParams(
            date=keys["date"], city=keys["city"], model_uri=model_uri, features_uri=city_demand_features.uri
        ),
        inputs={"model": model_uri, "city_demand_features": city_demand_features},
        metadata=lambda _: {"model_uri": model_uri},
    )
