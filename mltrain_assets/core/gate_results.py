"""A step's gates as Dagster checks: their specs, partitioned like the asset, and their results per partition."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetRecordsFilter,
    DagsterInvariantViolationError,
    MetadataValue,
    Output,
    PartitionsDefinition,
    PreviewWarning,
)

from mltrain_assets.core.gates import Gate, GateOutcome
from mltrain_assets.instance.dagster_private import AssetCheckEvaluationTargetMaterializationData


def gate_specs(
    asset: str, gates: Sequence[Gate], partitions_def: PartitionsDefinition | None = None
) -> list[AssetCheckSpec]:
    """The blocking check specs an asset declares for the gates its step evaluates, partitioned like the asset.

    Pass the asset's ``partitions_def``: each partition (a date, a date x city) then has its own
    result in the UI and the instance, so one city failing its gate every day never hides behind
    another's pass (``test_catalog`` holds every partitioned asset's checks to it).
    """
    with warnings.catch_warnings():
        # Partitioned checks are a preview in Dagster 1.13: opted into here, once, on purpose.
        warnings.simplefilter("ignore", PreviewWarning)
        return [
            AssetCheckSpec(g.name, asset=asset, blocking=True, description=g.description, partitions_def=partitions_def)
            for g in gates
        ]


def check_results(outcomes: Sequence[GateOutcome]) -> Iterator[AssetCheckResult | AssetCheckEvaluation | Output]:
    """Each gate's result: one per partition of the run.

    A run over one partition yields an ``AssetCheckResult`` per gate (Dagster records it on the run's
    partition when the check is partitioned). A run over a range (a single-run backfill, the demo's
    ingestion window) has no partition of its own, so each partitioned gate yields its check's output
    once and one ``AssetCheckEvaluation`` per partition, each naming that partition's own values and
    violations; a failed one still fails the step (Dagster's blocking check handling).
    """
    context = _current_context()
    for outcome in outcomes:
        spec = _partitioned_spec(context, outcome.name) if context is not None else None
        if context is None or spec is None or context.has_partition_key:
            yield AssetCheckResult(check_name=outcome.name, passed=outcome.passed, **_result_fields(outcome))
            continue
        if spec.key in context.selected_asset_check_keys:  # the check's own output, as Dagster emits it
            yield Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(spec.key))
        for partition in sorted(outcome.observed):
            own = outcome.for_partition(partition)
            yield AssetCheckEvaluation(
                asset_key=spec.asset_key,
                check_name=outcome.name,
                passed=own.passed,
                target_materialization_data=_materialization_of(context, partition),
                blocking=spec.blocking,
                partition=partition,
                **_result_fields(own),
            )


def _current_context() -> AssetExecutionContext | None:
    """The asset step being executed, if any (``check_results`` is also called outside a run)."""
    try:
        return AssetExecutionContext.get()
    except DagsterInvariantViolationError:
        return None


def _partitioned_spec(context: AssetExecutionContext, check_name: str) -> AssetCheckSpec | None:
    spec = context.assets_def.get_spec_for_check_key(AssetCheckKey(context.asset_key, check_name))
    return spec if spec is not None and spec.partitions_def is not None else None


def _materialization_of(
    context: AssetExecutionContext, partition: str
) -> AssetCheckEvaluationTargetMaterializationData | None:
    """The partition's materialization this check evaluated (what Dagster attaches to a single-partition result)."""
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    record = records[0]
    return AssetCheckEvaluationTargetMaterializationData(
        run_id=record.run_id, storage_id=record.storage_id, timestamp=record.timestamp
    )


def _result_fields(outcome: GateOutcome) -> dict[str, Any]:
    """Severity, description and metadata of a gate's result: one partition's values flat, else all of them."""
    observed = next(iter(outcome.observed.values())) if len(outcome.observed) == 1 else outcome.observed
    return {
        "severity": AssetCheckSeverity.ERROR,
        "description": outcome.describe(),
        "metadata": {
            **(
                {k: v for k, v in observed.items() if isinstance(v, (int, float, str))}
                if len(outcome.observed) == 1
                else {}
            ),
            "partitions": MetadataValue.json(outcome.observed),
            "violations": len(outcome.violations),
        },
    }
