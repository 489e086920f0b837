"""Small assets whose runs the alert tests materialize: a failing step, a gated model per city (its gate a
whole-asset check, as today, or a check partitioned like the asset), a registration that promotes, and
an asset with a one-hour freshness policy, and a per-city freshness check. ``defs`` is also a code location for Dagster's freshness daemon."""

import datetime as dt

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    Definitions,
    FreshnessPolicy,
    Output,
    RetryPolicy,
    StaticPartitionsDefinition,
    asset,
    asset_check,
    mem_io_manager,
)

from mltrain_assets.artifacts import ArtifactRef
from mltrain_assets.core import promotion
from mltrain_assets.core.gates import metric_below
from mltrain_assets.core.steps import check_results
from mltrain_assets.resources.tracking import ModelRegistry, RegisteredVersion

CITIES = StaticPartitionsDefinition(["nyc|2026-11-27", "sf|2026-11-27"])
MAPE = {"nyc|2026-11-27": 0.12, "sf|2026-11-27": 0.21}
GATE = metric_below("mape_below_0_15", "mape", 0.15)
MLFLOW_UI = "http://mlflow.alerts.test"
TAGS = {"pipeline": "demand"}


@asset(partitions_def=CITIES, tags=TAGS)
def city_features(context: AssetExecutionContext) -> int:
    raise RuntimeError(f"landed file for {context.partition_key} is truncated")


def _model(context: AssetExecutionContext):
    pk = context.partition_key
    yield Output(1, metadata={"mape": MAPE[pk]})
    # The project's own gate and check results (core.gates, core.steps), as a workload step yields them.
    yield from check_results([GATE.evaluate(context.asset_key.to_user_string(), {pk: {"mape": MAPE[pk]}})])


@asset(partitions_def=CITIES, tags=TAGS, check_specs=[AssetCheckSpec(GATE.name, asset="city_model", blocking=True)])
def city_model(context: AssetExecutionContext):
    """Its gate is a check of the whole asset: the evaluation names its partition in its metadata."""
    yield from _model(context)


@asset(
    partitions_def=CITIES,
    tags=TAGS,
    check_specs=[AssetCheckSpec(GATE.name, asset="city_model_by_partition", blocking=True, partitions_def=CITIES)],
)
def city_model_by_partition(context: AssetExecutionContext):
    """Its gate is partitioned like the asset: each (date, city) has its own evaluation."""
    yield from _model(context)


@asset(
    partitions_def=CITIES,
    tags=TAGS,
    retry_policy=RetryPolicy(max_retries=1),
    check_specs=[AssetCheckSpec(GATE.name, asset="flaky_city_model")],
)
def flaky_city_model(context: AssetExecutionContext):
    """Its (non-blocking) gate fails, then the step fails and its retry evaluates the gate again."""
    yield from _model(context)
    if context.retry_number == 0:
        raise RuntimeError("lost the worker after the gate")


def _registration_metadata(context: AssetExecutionContext, replayed: bool) -> dict:
    """What ``core.promotion`` records on a registration that moved `staging` (or replayed that decision)."""
    registry = ModelRegistry(tracking_uri="sqlite:///unused.db", ui_url=MLFLOW_UI)
    registration = promotion._Registration(registry, "demand_model", _model_ref(context), {"mape": 0.12}, GATE)
    registered = RegisteredVersion("demand_model", "3", created=not replayed, source="", run_id=None)
    reason = "replaces v2 (2026-11-26)"
    decision = promotion._Decision(
        promoted=True,
        reason=reason + (promotion.REPLAYED_SUFFIX if replayed else ""),
        comparison={},
        served="3",
        current="2",
        decided_now=not replayed,
    )
    ref = promotion._registered_ref(context, "demand_model", registered, decision)
    return promotion._materialization_metadata(registration, ref, registered, decision, {})


def _model_ref(context: AssetExecutionContext) -> ArtifactRef:
    return ArtifactRef(
        asset_key="city_model",
        partition_key=context.partition_key,
        version="v1",
        uri="file:///model",
        metadata={"mape": 0.12, "model_name": "demand_model"},
    )


@asset(partitions_def=CITIES, tags={**TAGS, "layer": "registered"})
def registered_demand_model(context: AssetExecutionContext):
    replayed = context.run.tags.get("replayed") == "true"
    return Output(1, metadata=_registration_metadata(context, replayed))


@asset(tags=TAGS, freshness_policy=FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=1)))
def city_aggregates() -> int:
    return 1


@asset_check(asset=city_model_by_partition, name="city_fresh", partitions_def=CITIES, blocking=False)
def city_model_city_fresh() -> AssetCheckResult:
    """A per-key freshness check as the reporting pipeline declares them; its sensor records the results."""
    return AssetCheckResult(passed=True)


ASSETS = [
    city_features,
    city_model,
    city_model_by_partition,
    flaky_city_model,
    registered_demand_model,
    city_aggregates,
]
defs = Definitions(assets=ASSETS, asset_checks=[city_model_city_fresh], resources={"io_manager": mem_io_manager})
