"""Freshness per key (city): a check on every date x key asset, partitioned like it, kept current by a sensor.

An asset's freshness policy (``core.assets.FRESHNESS``) judges the asset's last update, so a date x
city asset stays fresh as long as any one city updates. The check ``<key>_fresh`` (``city_fresh``)
judges each city on its own, by the same policy: the latest materialization of the city's newest
date (``collect.key_freshness``). Past the warn window it fails with WARN severity, past the fail
window (or never materialized) with ERROR; it never blocks anything.

The sensor ``mltrain_key_freshness_sensor`` evaluates every city every ``SENSOR_INTERVAL_S`` and
records, for each, one result on the city's partition of the latest date (what the catalog shows:
the asset's check failed, on which city), only when it changes: the status, the latest date, or
that partition's materialization (a result must name the materialization it judged, or the UI
counts it as not evaluated). Running the check from the UI or in a job evaluates the same rule for
the partition's city.
"""

import datetime as dt
import json
import warnings
from collections.abc import Iterator, Sequence
from typing import cast

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetRecordsFilter,
    AssetSpec,
    DagsterInstance,
    DefaultSensorStatus,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    PreviewWarning,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    TimeWindowPartitionsDefinition,
    asset_check,
    sensor,
)

from mltrain_assets.core.pipeline import Pipeline
from mltrain_assets.core.report import FreshnessRow
from mltrain_assets.instance.dagster_private import AssetCheckEvaluationTargetMaterializationData
from mltrain_assets.pipelines.reporting.collect import asset_specs, freshness_windows, key_freshness

SENSOR_NAME = "mltrain_key_freshness_sensor"
SENSOR_INTERVAL_S = 600  # freshness windows are hours long: every 10 minutes is prompt enough


def check_name(pipeline: Pipeline) -> str:
    return f"{pipeline.key_dimension}_fresh"


def keyed_specs(pipeline: Pipeline) -> list[AssetSpec]:
    """The pipeline's date x key assets that declare a time-window freshness policy."""
    return [
        spec
        for spec in asset_specs(pipeline)
        if isinstance(spec.partitions_def, MultiPartitionsDefinition) and freshness_windows(spec) is not None
    ]


def severity_of(row: FreshnessRow) -> AssetCheckSeverity:
    return AssetCheckSeverity.WARN if row.status == "warn" else AssetCheckSeverity.ERROR


def result_fields(row: FreshnessRow) -> dict:
    return {
        "passed": not row.stale,
        "severity": severity_of(row),
        "description": row.describe(),
        "metadata": {
            row_key: value
            for row_key, value in {
                "key": row.key,
                "status": row.status,
                "newest_date": row.newest_date,
                "last_materialized": row.last_updated,
                "age_hours": row.age_hours,
                "warn_after_hours": row.warn_hours,
                "fail_after_hours": row.fail_hours,
            }.items()
            if value is not None
        },
    }


def _row(instance: DagsterInstance, pipeline: Pipeline, asset: str, key: str, as_of: dt.datetime) -> FreshnessRow:
    (row,) = [r for r in key_freshness(instance, pipeline, as_of, keys=[key]) if r.asset == asset]
    return row


def _check(pipeline: Pipeline, spec: AssetSpec) -> AssetChecksDefinition:
    asset = spec.key.to_user_string()
    dimension = pipeline.key_dimension

    with warnings.catch_warnings():
        # Partitioned checks are a preview in Dagster 1.13: opted into on purpose, like the gates.
        warnings.simplefilter("ignore", PreviewWarning)

        @asset_check(
            asset=spec.key,
            name=check_name(pipeline),
            partitions_def=spec.partitions_def,
            blocking=False,
            description=(
                f"Each {dimension} on its own: the latest materialization of its newest date against the "
                "asset's freshness policy (WARN past the warn window, ERROR past the fail window). "
                f"Kept current by the sensor {SENSOR_NAME}."
            ),
        )
        def key_fresh(context: AssetCheckExecutionContext) -> AssetCheckResult:
            partitions_def = cast(MultiPartitionsDefinition, spec.partitions_def)  # keyed_specs: date x key
            key = partitions_def.get_partition_key_from_str(context.partition_key).keys_by_dimension[dimension]
            row = _row(context.instance, pipeline, asset, key, dt.datetime.now(dt.UTC))
            return AssetCheckResult(**result_fields(row))

    return key_fresh


def key_freshness_checks(pipelines: Sequence[Pipeline]) -> list[AssetChecksDefinition]:
    """``<key>_fresh`` on every date x key asset of these pipelines."""
    return [_check(pipeline, spec) for pipeline in pipelines if pipeline.keys for spec in keyed_specs(pipeline)]


def _latest_date(partitions_def: MultiPartitionsDefinition) -> str | None:
    (time_dimension,) = [d for d in partitions_def.partitions_defs if d.name == "date"]
    assert isinstance(time_dimension.partitions_def, TimeWindowPartitionsDefinition)
    return time_dimension.partitions_def.get_last_partition_key()


def evaluations(
    instance: DagsterInstance, pipelines: Sequence[Pipeline], as_of: dt.datetime, recorded: dict[str, list]
) -> Iterator[tuple[str, list, AssetCheckEvaluation]]:
    """``(state key, state, evaluation)`` for each (asset, key) whose result differs from ``recorded``."""
    for pipeline in pipelines:
        if not pipeline.keys:
            continue
        specs = {spec.key.to_user_string(): spec for spec in keyed_specs(pipeline)}
        for row in key_freshness(instance, pipeline, as_of):
            spec = specs.get(row.asset)
            if spec is None:
                continue
            assert isinstance(spec.partitions_def, MultiPartitionsDefinition)
            latest = _latest_date(spec.partitions_def)
            if latest is None:
                continue
            partition = str(MultiPartitionKey({"date": latest, pipeline.key_dimension: row.key}))
            materialized = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=spec.key, asset_partitions=[partition]), limit=1
            ).records
            target = (
                AssetCheckEvaluationTargetMaterializationData(
                    run_id=materialized[0].run_id,
                    storage_id=materialized[0].storage_id,
                    timestamp=materialized[0].timestamp,
                )
                if materialized
                else None
            )
            state_key = f"{row.asset}/{row.key}"
            state = [partition, row.status, target.storage_id if target else None]
            if recorded.get(state_key) == state:
                continue
            fields = result_fields(row)
            yield (
                state_key,
                state,
                AssetCheckEvaluation(
                    asset_key=spec.key,
                    check_name=check_name(pipeline),
                    passed=fields["passed"],
                    metadata=fields["metadata"],
                    target_materialization_data=target,
                    severity=fields["severity"],
                    description=fields["description"],
                    blocking=False,
                    partition=partition,
                ),
            )


def key_freshness_sensor(pipelines: Sequence[Pipeline]):
    @sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Judges each city of every date x city asset against the asset's freshness policy and records the "
            "result as that city's partition of the check <key>_fresh (only when it changes)."
        ),
    )
    def _sensor(context: SensorEvaluationContext):
        recorded = json.loads(context.cursor) if context.cursor else {}
        changed = list(evaluations(context.instance, pipelines, dt.datetime.now(dt.UTC), recorded))
        if not changed:
            return SkipReason("no city's freshness changed")
        for state_key, state, evaluation in changed:
            recorded[state_key] = state
            context.log.info(f"{evaluation.check_name} {evaluation.partition}: {evaluation.description}")
        return SensorResult(asset_events=[e for _, _, e in changed], cursor=json.dumps(recorded, sort_keys=True))

    return _sensor
