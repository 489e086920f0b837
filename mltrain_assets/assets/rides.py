"""Demand forecasting: ride events -> city-hour features -> LightGBM per city -> registry -> forecasts.

Thin control-plane assets: each resolves references, asks the compute backend to run a
workload, and returns a reference. The heavy code is in ``mltrain_assets/workloads``.
"""

import json

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
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
from mltrain_assets.checks.metric_gates import MAPE_THRESHOLD, metric_below
from mltrain_assets.partitions import daily_city_partitions, daily_partitions
from mltrain_assets.resources.compute import ComputeBackend
from mltrain_assets.resources.storage import ArtifactStorage
from mltrain_assets.resources.tracking import ModelRegistry
from mltrain_assets.workloads import demand_config

GROUP = "demand_forecasting"
RIDES_WINDOW_DAYS = demand_config.INPUT_DAYS

ride_events = landing_ingestion_asset(
    name="ride_events",
    dataset="rides",
    group_name=GROUP,
    description="One UTC day of ride events from the landing zone: validated, deduplicated by ride_id, versioned parquet.",
)


@asset(
    partitions_def=daily_partitions,
    ins={
        "ride_events": AssetIn(
            partition_mapping=TimeWindowPartitionMapping(start_offset=-(RIDES_WINDOW_DAYS - 1), end_offset=0),
            metadata={"allow_missing_partitions": True},
        )
    },
    code_version=demand_config.FEATURES_CODE_VERSION,
    group_name=GROUP,
    kinds={"spark", "sql"},
    pool="spark",
    retry_policy=DATA_PLANE_RETRY,
    automation_condition=when_upstream_ready(),
    description=f"~200 features per city-hour over a trailing {RIDES_WINDOW_DAYS}-day window of ride_events (Spark SQL).",
)
def city_demand_features(
    context: AssetExecutionContext,
    ride_events: dict[str, ArtifactRef],
    storage: ArtifactStorage,
    compute: ComputeBackend,
) -> Output[ArtifactRef]:
    expected = [str(k) for k in context.asset_partition_keys_for_input("ride_events")]
    ride_events = require_window(context, "ride_events", ride_events, expected)
    uris = [ride_events[d].uri for d in expected]

    ref, reused = run_versioned_step(
        context,
        storage=storage,
        compute=compute,
        partition_key=context.partition_key,
        inputs={f"ride_events/{d}": ride_events[d] for d in expected},
        workload="mltrain_assets.workloads.demand_features",
        build_args=lambda out: cli_args(
            rides_uris=json.dumps(uris),
            date=context.partition_key,
            out_uri=out,
            spark_master=compute.spark_master,
            engine=compute.sql_engine,
        ),
        timeout_s=3600,
        profile="spark",
    )
    return versioned_output(ref, reused, {"window": f"{expected[0]}..{expected[-1]}"})


@asset(
    partitions_def=daily_city_partitions,
    code_version=demand_config.TRAIN_CODE_VERSION,
    group_name=GROUP,
    kinds={"lightgbm", "mlflow"},
    pool="training",
    retry_policy=DATA_PLANE_RETRY,
    automation_condition=when_upstream_ready(),
    check_specs=[
        AssetCheckSpec(
            "mape_below_threshold",
            asset="city_demand_model",
            blocking=True,
            description=f"Held-out MAPE < {MAPE_THRESHOLD}; a failure blocks registration.",
        )
    ],
    description="LightGBM demand model for one city and date, tracked in MLflow; gated on held-out MAPE.",
)
def city_demand_model(
    context: AssetExecutionContext, city_demand_features: ArtifactRef, storage: ArtifactStorage, compute: ComputeBackend
):
    keys = context.partition_key.keys_by_dimension
    date, city = keys["date"], keys["city"]
    ref, reused = run_versioned_step(
        context,
        storage=storage,
        compute=compute,
        partition_key=context.partition_key,
        inputs={"city_demand_features": city_demand_features},
        params={"city": city},
        workload="mltrain_assets.workloads.train_demand",
        build_args=lambda out: cli_args(features_uri=city_demand_features.uri, city=city, date=date, out_uri=out),
        timeout_s=1800,
        profile="training",
    )
    gate = metric_below(
        "city_demand_model", str(context.partition_key), "mape", ref.metadata.get("mape"), MAPE_THRESHOLD
    )
    ref.metadata["gate_failures"] = gate.violations
    yield versioned_output(ref, reused, {"mlflow_run": ref.metadata.get("mlflow_run_id", "")})
    yield AssetCheckResult(
        check_name="mape_below_threshold",
        passed=gate.passed,
        severity=AssetCheckSeverity.ERROR,
        description=gate.describe(),
        metadata={
            "mape": ref.metadata.get("mape"),
            "naive_mape": ref.metadata.get("naive_mape"),
            "threshold": MAPE_THRESHOLD,
        },
    )


@asset(
    partitions_def=daily_city_partitions,
    code_version="1",
    group_name=GROUP,
    kinds={"mlflow"},
    retry_policy=DATA_PLANE_RETRY,
    automation_condition=when_upstream_ready(),
    description="The city model registered as demand-forecast-<city> with lineage tags, aliased `staging`.",
)
def registered_demand_model(
    context: AssetExecutionContext,
    city_demand_model: ArtifactRef,
    city_demand_features: ArtifactRef,
    registry: ModelRegistry,
) -> Output[ArtifactRef]:
    require_gates_passed(context, {"city_demand_model": city_demand_model})
    city = context.partition_key.keys_by_dimension["city"]
    snapshot = snapshot_with_upstream(
        {"city_demand_model": city_demand_model, "city_demand_features": city_demand_features}
    )
    return register_and_promote(
        context,
        registry=registry,
        model_name=demand_config.registered_model_name(city),
        model_ref=city_demand_model,
        model_uri=city_demand_model.metadata["mlflow_model_uri"],
        data_snapshot=snapshot,
        score_metadata={"mape": city_demand_model.metadata.get("mape")},
    )


@asset(
    partitions_def=daily_city_partitions,
    code_version=demand_config.FORECAST_CODE_VERSION,
    group_name=GROUP,
    kinds={"lightgbm", "parquet"},
    retry_policy=DATA_PLANE_RETRY,
    automation_condition=when_upstream_ready(),
    description="Next-day hourly demand forecasts for one city from its `staging` model.",
)
def demand_forecasts(
    context: AssetExecutionContext,
    registered_demand_model: ArtifactRef,
    city_demand_features: ArtifactRef,
    storage: ArtifactStorage,
    compute: ComputeBackend,
) -> Output[ArtifactRef]:
    keys = context.partition_key.keys_by_dimension
    date, city = keys["date"], keys["city"]
    model_uri = served_model_uri(registered_demand_model)
    ref, reused = run_versioned_step(
        context,
        storage=storage,
        compute=compute,
        partition_key=context.partition_key,
        inputs={"model": model_uri, "city_demand_features": city_demand_features},
        workload="mltrain_assets.workloads.forecast_demand",
        build_args=lambda out: cli_args(
            model_uri=model_uri, features_uri=city_demand_features.uri, city=city, date=date, out_uri=out
        ),
        timeout_s=900,
    )
    return versioned_output(ref, reused, {"model_uri": model_uri})


demand_assets = [ride_events, city_demand_features, city_demand_model, registered_demand_model, demand_forecasts]
