"""What the model quality report shows, read from where it is recorded.

- quality: each pipeline's gated model asset's materialization metadata (the metric, a baseline)
  and its blocking check's result in the same run; the registration asset's metadata (version,
  promoted or not);
- cost: every materialization of the date's partitions of the pipeline's assets (``wall_s``,
  ``cpu_s``, ``peak_rss_mb``, which ``core.steps`` records);
- staleness: the newest date on or before the report date whose version was promoted (the
  registration metadata over a look-back window, else the registry's ``staging`` tags), the
  registry's ``staging`` version now, when each landed day's ``_SUCCESS`` marker appeared, each
  asset's last update against its freshness policy (read from its definition: what the UI checks),
  and, for a date x key asset, each key's (city's) own: the latest materialization of its newest
  date against the same policy (``key_freshness``), so a city that stopped getting new models is
  stale while the others are fresh (the asset's own last update says fresh as long as any city updates).

Reading the instance rather than loading inputs keeps the report whole when some partitions
(a city, a failed gate) are missing: a missing one is a row that says so.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from typing import Any, cast

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetsDefinition,
    AssetSpec,
    DagsterEventType,
    DagsterInstance,
    MultiPartitionKey,
    MultiPartitionsDefinition,
)

from mltrain_assets.core.assets import LAYERS
from mltrain_assets.core.pipeline import Pipeline, QualitySpec
from mltrain_assets.core.promotion import STAGING_ALIAS
from mltrain_assets.core.report_data import (
    CostRow,
    FreshnessRow,
    LandingRow,
    ModelRow,
    ModelSection,
    QualityReport,
    days_between,
    history_dates,
    landing_arrival,
)
from mltrain_assets.resources.tracking import ModelRegistry

# How far back the last promotion is looked for in the instance before asking the registry.
STALENESS_LOOKBACK_DAYS = 60
_PAGE = 1000


def quality_spec(pipeline: Pipeline) -> QualitySpec | None:
    """What the report reads for a pipeline's model: its own declaration (``Pipeline.quality``)."""
    return pipeline.quality


def collect_report(
    instance: DagsterInstance,
    date: str,
    pipelines: Sequence[Pipeline],
    *,
    landing_uri: str,
    registry: ModelRegistry | None,
    history_days: int,
    grace_hours: float,
) -> QualityReport:
    """The report for ``date`` from the instance's records, the landing zone and the registry."""
    dates = history_dates(date, history_days)
    sections = []
    for pipeline in pipelines:
        spec = quality_spec(pipeline)
        if spec is not None:
            sections.append(_section(instance, pipeline, spec, date, dates, registry))
    costs = [_cost(instance, pipeline, date) for pipeline in pipelines]
    datasets = list(dict.fromkeys(landing.dataset for pipeline in pipelines for landing in pipeline.landings))
    landings: list[LandingRow] = [
        landing_arrival(landing_uri, dataset, day, grace_hours) for dataset in datasets for day in dates
    ]
    as_of = dt.datetime.now(dt.UTC)  # freshness is a state of now, as the UI's asset health shows it
    return QualityReport(
        date=date,
        history_days=len(dates),
        grace_hours=grace_hours,
        sections=sections,
        costs=costs,
        landings=landings,
        freshness=[row for pipeline in pipelines for row in _freshness(instance, pipeline, as_of)],
        key_freshness=[row for pipeline in pipelines for row in key_freshness(instance, pipeline, as_of)],
        freshness_as_of=as_of.isoformat(timespec="seconds"),
    )


def freshness_windows(spec: AssetSpec) -> tuple[float, float] | None:
    """The asset's freshness policy as (warn, fail) hours, or None without a time-window policy."""
    # A time-window policy (FreshnessPolicy.time_window, core/assets.py); its class is not public Dagster.
    warn_window = getattr(spec.freshness_policy, "warn_window", None)
    fail_window = getattr(spec.freshness_policy, "fail_window", None)
    if warn_window is None or fail_window is None:
        return None
    return warn_window.to_timedelta().total_seconds() / 3600, fail_window.to_timedelta().total_seconds() / 3600


def asset_specs(pipeline: Pipeline) -> list[AssetSpec]:
    # Declared as any asset-like definition; a pipeline's are AssetsDefinitions (core/assets.py).
    assets = cast(list[AssetsDefinition], list(pipeline.defs.assets or ()))
    return [spec for asset in assets for spec in asset.specs]


def _age(updated: dt.datetime | None, as_of: dt.datetime) -> tuple[str | None, float | None]:
    if updated is None:
        return None, None
    return updated.isoformat(timespec="seconds"), round((as_of - updated).total_seconds() / 3600, 2)


def _freshness(instance: DagsterInstance, pipeline: Pipeline, as_of: dt.datetime) -> list[FreshnessRow]:
    """Each asset's newest materialization at ``as_of`` against its own freshness policy (from its definition)."""
    rows = []
    for spec in asset_specs(pipeline):
        windows = freshness_windows(spec)
        if windows is None:
            continue
        rows.append(_freshness_row(pipeline, spec, windows, _last_update(instance, spec, as_of), as_of))
    return sorted(rows, key=_layer_order)


def _last_update(
    instance: DagsterInstance, spec: AssetSpec, as_of: dt.datetime, partition: str | None = None
) -> dt.datetime | None:
    """When the asset (its ``partition``, if given) was last materialized before ``as_of``."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(
            asset_key=spec.key,
            asset_partitions=[partition] if partition else None,
            before_timestamp=as_of.timestamp(),
        ),
        limit=1,
    ).records
    return dt.datetime.fromtimestamp(records[0].timestamp, dt.UTC) if records else None


def _freshness_row(
    pipeline: Pipeline,
    spec: AssetSpec,
    windows: tuple[float, float],
    updated: dt.datetime | None,
    as_of: dt.datetime,
    **keyed: Any,
) -> FreshnessRow:
    last_updated, age_hours = _age(updated, as_of)
    return FreshnessRow(
        pipeline=pipeline.name,
        asset=spec.key.to_user_string(),
        layer=spec.tags.get("layer", ""),
        warn_hours=windows[0],
        fail_hours=windows[1],
        last_updated=last_updated,
        age_hours=age_hours,
        **keyed,
    )


def _layer_order(row: FreshnessRow) -> tuple[int, str, str]:
    return (LAYERS.index(row.layer) if row.layer in LAYERS else 99, row.asset, row.key)


def key_freshness(
    instance: DagsterInstance, pipeline: Pipeline, as_of: dt.datetime, keys: Sequence[str] | None = None
) -> list[FreshnessRow]:
    """Per key (city) of each date x key asset: its newest date's latest materialization against the asset's policy.

    One row per configured key (``keys``, default the pipeline's), so a city never materialized is a
    row that says so. The newest *date* is what counts: a backfill of an old date does not make a city
    look fresh. Read from the instance's latest materialization per partition (one query per asset).
    """
    wanted = list(keys if keys is not None else (pipeline.keys() if pipeline.keys else []))
    rows = []
    for spec in asset_specs(pipeline):
        windows = freshness_windows(spec)
        partitions_def = spec.partitions_def
        if windows is None or not isinstance(partitions_def, MultiPartitionsDefinition) or not wanted:
            continue
        newest: dict[str, tuple[str, str]] = {}  # key -> (date, partition)
        latest_ids = instance.event_log_storage.get_latest_storage_id_by_partition(
            spec.key, DagsterEventType.ASSET_MATERIALIZATION
        )
        for partition in latest_ids:
            dimensions = partitions_def.get_partition_key_from_str(partition).keys_by_dimension
            key, day = dimensions[pipeline.key_dimension], dimensions["date"]
            if key in wanted and day > newest.get(key, ("", ""))[0]:
                newest[key] = (day, partition)
        for key in wanted:
            day, partition = newest.get(key, ("", ""))
            updated = _last_update(instance, spec, as_of, partition) if partition else None
            rows.append(_freshness_row(pipeline, spec, windows, updated, as_of, key=key, newest_date=day or None))
    return sorted(rows, key=_layer_order)


# ------------------------------------------------------------------ instance records


def _partitions(pipeline: Pipeline, asset: str, dates: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``{partition key: (date, key)}`` of ``asset`` for these dates (every configured key if keyed)."""
    if asset in pipeline.keyed_assets:
        keys = pipeline.keys() if pipeline.keys else []
        return {
            str(MultiPartitionKey({"date": day, pipeline.key_dimension: key})): (day, key)
            for day in dates
            for key in keys
        }
    return {day: (day, "") for day in dates}


def _records(instance: DagsterInstance, asset: str, partitions: Iterable[str]) -> list[Any]:
    """Every materialization record of these partitions of ``asset``, newest first."""
    partitions = list(partitions)
    if not partitions:
        return []
    records: list[Any] = []
    cursor = None
    while True:
        result = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=partitions), limit=_PAGE, cursor=cursor
        )
        records += result.records
        if not result.has_more:
            return records
        cursor = result.cursor


def _latest(records: Iterable[Any]) -> dict[str, Any]:
    latest: dict[str, Any] = {}
    for record in records:  # newest first
        latest.setdefault(record.partition_key, record)
    return latest


def _metadata(record: Any) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in record.asset_materialization.metadata.items()}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def _gate_passed(instance: DagsterInstance, record: Any, spec: QualitySpec, value: float | None) -> bool | None:
    """The gate's result for ``record``'s partition in the run that materialized it; else the rule on the metric.

    Gates are partitioned (``core.steps.gate_specs``): a run over a range records one result per
    partition, so the partition's own is read (an unpartitioned result, from before, counts for all).
    """
    unpartitioned = None
    for event in instance.all_logs(record.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = event.asset_check_evaluation
        if (
            evaluation is None
            or evaluation.asset_key != AssetKey(spec.model_asset)
            or evaluation.check_name != spec.gate
        ):
            continue
        if evaluation.partition == record.partition_key:
            return bool(evaluation.passed)
        if evaluation.partition is None:
            unpartitioned = bool(evaluation.passed)
    if unpartitioned is not None:
        return unpartitioned
    if value is None:
        return None
    return value < spec.threshold if spec.lower_is_better else value > spec.threshold


# ------------------------------------------------------------------ sections


def _section(
    instance: DagsterInstance,
    pipeline: Pipeline,
    spec: QualitySpec,
    date: str,
    dates: list[str],
    registry: ModelRegistry | None,
) -> ModelSection:
    keyed = spec.model_asset in pipeline.keyed_assets
    model_partitions = _partitions(pipeline, spec.model_asset, dates)
    models = _latest(_records(instance, spec.model_asset, model_partitions))
    history: dict[str, dict[str, float]] = {}
    for partition, (day, key) in model_partitions.items():
        history.setdefault(key, {})
        if partition in models:
            value = _number(_metadata(models[partition]).get(spec.metric))
            if value is not None:
                history[key][day] = value

    lookback = history_dates(date, STALENESS_LOOKBACK_DAYS)
    registered_partitions = _partitions(pipeline, spec.registered_asset, lookback)
    registered = _latest(_records(instance, spec.registered_asset, registered_partitions))
    promoted_on: dict[str, str] = {}
    for partition, record in registered.items():
        day, key = registered_partitions[partition]
        if _metadata(record).get("promoted_to_staging") is True and day > promoted_on.get(key, ""):
            promoted_on[key] = day

    rows = []
    for partition, (day, key) in model_partitions.items():
        if day != date:
            continue
        model = models.get(partition)
        metadata = _metadata(model) if model else {}
        value = _number(metadata.get(spec.metric))
        reg = registered.get(partition)
        reg_metadata = _metadata(reg) if reg else {}
        staging_version, staging_date = _staging(registry, spec.model_name(key))
        last = promoted_on.get(key)
        if last is None and staging_date and staging_date <= date:
            last = staging_date  # promoted before the look-back window
        rows.append(
            ModelRow(
                key=key,
                model_name=spec.model_name(key),
                value=value,
                baseline=_number(metadata.get(spec.baseline)) if spec.baseline else None,
                gate_passed=_gate_passed(instance, model, spec, value) if model else None,
                version=str(reg_metadata["model_version"]) if "model_version" in reg_metadata else None,
                promoted=reg_metadata.get("promoted_to_staging") if reg else None,
                reason=str(reg_metadata.get("promotion_reason", "")),
                last_promoted=last,
                days_since_promotion=days_between(last, date) if last else None,
                staging_now=f"v{staging_version} ({staging_date or '?'})" if staging_version else None,
            )
        )
    return ModelSection(
        pipeline=pipeline.name,
        title=spec.title or pipeline.name,
        metric=spec.metric,
        threshold=spec.threshold,
        lower_is_better=spec.lower_is_better,
        key_label=pipeline.key_dimension if keyed else "model",
        rows=rows,
        history=history,
        baseline=spec.baseline,
    )


def _staging(registry: ModelRegistry | None, model_name: str) -> tuple[str | None, str | None]:
    """The registry's `staging` version of ``model_name`` and the date it was trained for."""
    if registry is None:
        return None, None
    version = registry.alias_version(model_name, STAGING_ALIAS)
    if version is None:
        return None, None
    partition = registry.version_tags(model_name, version).get("mltrain.partition", "")
    day = next((p for p in partition.split("|") if len(p) == 10 and p[4] == "-" and p[7] == "-"), None)
    return version, day


def _cost(instance: DagsterInstance, pipeline: Pipeline, date: str) -> CostRow:
    totals = {"materializations": 0, "launched": 0, "reused": 0, "unmeasured": 0}
    wall = cpu = 0.0
    peak: float | None = None
    for asset in pipeline.assets():
        for record in _records(instance, asset, _partitions(pipeline, asset, [date])):
            metadata = _metadata(record)
            totals["materializations"] += 1
            reused = metadata.get("reused_committed_version")
            totals["launched"] += reused is False
            totals["reused"] += reused is True
            wall += _number(metadata.get("wall_s")) or 0.0
            measured = _number(metadata.get("cpu_s"))
            cpu += measured or 0.0
            if "cpu_s" in metadata and measured is None and reused is False:
                totals["unmeasured"] += 1
            rss = _number(metadata.get("peak_rss_mb"))
            if rss is not None:
                peak = max(peak or 0.0, rss)
    return CostRow(pipeline=pipeline.name, wall_s=round(wall, 3), cpu_s=round(cpu, 3), peak_rss_mb=peak, **totals)
