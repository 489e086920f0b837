"""A pipeline's Dagster side, derived from its spec, its asset definitions and its gates.

Each pipeline's ``definitions`` module (named by its ``registry.PipelineSpec``) holds
``pipeline = define_pipeline(spec, ...)`` given the asset objects, the jobs as lists of assets, and
the model's gate. Everything the demo, backfill, report and CLI read (asset lists by partitioning,
stage labels, whether a stage runs per key, the quality metric, threshold and direction) is derived
here from those objects, never written again by hand.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dagster import (
    AssetsDefinition,
    AssetSelection,
    Definitions,
    MultiPartitionsDefinition,
    define_asset_job,
    in_process_executor,
)

from mltrain_assets.core.assets import with_code_references
from mltrain_assets.core.gates import Gate
from mltrain_assets.core.schedules import daily_fallback_schedule
from mltrain_assets.core.sensors import landing_sensor
from mltrain_assets.registry import PipelineSpec, pipeline_spec, specs
from mltrain_assets.workloads.common.dates import Window


@dataclass(frozen=True)
class PipelineJob:
    """A job a pipeline author declares: its assets, in dependency order."""

    name: str
    assets: tuple[AssetsDefinition, ...]
    description: str


@dataclass(frozen=True)
class ModelQuality:
    """What the quality report shows for a pipeline's model: the model, its registration, the gate on it."""

    model: AssetsDefinition
    registered: AssetsDefinition
    gate: Gate  # a metric gate (``metric_below``/``metric_above``): metric, threshold and direction come from it
    model_name: Callable[[str], str]  # the registered model's name for a key ("" for a daily model)


@dataclass(frozen=True)
class Stage:
    """One demo run after ingestion: a job over the date, or over the date x each key (e.g. city)."""

    job: str
    label: str
    per_key: bool = False


@dataclass(frozen=True)
class QualitySpec:
    """What the model quality report (``model_quality_report``, ``mltrain report``) reads for a pipeline's model.

    The metric (and ``baseline``) come from ``model_asset``'s materialization metadata, the gate
    from its blocking check ``gate`` in the same run, the promotion decision from
    ``registered_asset``'s metadata, the serving version from the registry's ``staging`` alias of
    ``model_name(key)`` (``key``: the key dimension's value, e.g. a city; ``""`` for a daily model).
    """

    model_asset: str
    registered_asset: str
    metric: str
    threshold: float
    lower_is_better: bool
    gate: str
    model_name: Callable[[str], str]
    baseline: str = ""  # a naive baseline's metric in the same metadata, e.g. naive_mape
    title: str = ""


@dataclass(frozen=True)
class Pipeline:
    name: str
    spec: PipelineSpec
    defs: Definitions
    landing_dataset: str
    ingestion_asset: str
    ingestion_job: str
    landing_window: Window  # the landed days one date needs, oldest first
    daily_assets: tuple[str, ...]  # downstream assets partitioned by date
    # Per-day assets built from each landed day alone (in the ingestion job, over the landing window).
    landing_day_assets: tuple[str, ...] = ()
    keyed_assets: tuple[str, ...] = ()  # downstream assets partitioned by date x key
    keys: Callable[[], Sequence[str]] | None = None  # the key dimension's values (e.g. configured cities)
    key_dimension: str = ""
    stages: tuple[Stage, ...] = ()
    report_metrics: tuple[str, ...] = ()  # materialization metadata the demo prints per run
    summary: Callable[[str], str] | None = None  # what is registered and served for a date
    quality: QualitySpec | None = None  # what the model quality report shows (None: see reporting.collect)

    def assets(self) -> tuple[str, ...]:
        """Every asset of the pipeline, ingestion first."""
        return (self.ingestion_asset, *self.landing_day_assets, *self.daily_assets, *self.keyed_assets)


def _name(asset: AssetsDefinition) -> str:
    return asset.key.to_user_string()


def _job(declared: PipelineJob):
    partitions = {asset.partitions_def for asset in declared.assets}
    if len(partitions) != 1:
        raise ValueError(f"job {declared.name}: its assets must share one partitioning")
    # Each job's steps form a chain, so they run in the run worker's process (no per-step start-up).
    # The assets with their own checks (the gates), not checks defined beside them: a freshness check run right after
    # its asset's step would only ever pass (a sensor evaluates those; pipelines/reporting/freshness.py).
    own_checks = [key for asset in declared.assets for key in asset.check_keys]
    return define_asset_job(
        declared.name,
        selection=AssetSelection.assets(*declared.assets).without_checks() | AssetSelection.checks(*own_checks),
        partitions_def=partitions.pop(),
        executor_def=in_process_executor,
        description=declared.description,
    )


def _key_dimension(assets: Sequence[AssetsDefinition]) -> tuple[str, Callable[[], Sequence[str]] | None]:
    """The non-date dimension of the date x key assets, and its values."""
    for asset in assets:
        partitions = asset.partitions_def
        if isinstance(partitions, MultiPartitionsDefinition):
            (dimension,) = [d for d in partitions.partitions_defs if d.name != "date"]
            return dimension.name, dimension.partitions_def.get_partition_keys
    return "", None


def _quality(spec: PipelineSpec, quality: ModelQuality | None) -> QualitySpec | None:
    if quality is None:
        return None
    measure = quality.gate.measure
    if measure is None:
        raise ValueError(f"pipeline {spec.name}: gate {quality.gate.name} is not a metric gate")
    return QualitySpec(
        model_asset=_name(quality.model),
        registered_asset=_name(quality.registered),
        metric=measure.metric,
        threshold=measure.threshold,
        lower_is_better=measure.below,
        gate=quality.gate.name,
        model_name=quality.model_name,
        baseline=measure.context[0] if measure.context else "",
        title=spec.title,
    )


def define_pipeline(
    spec: PipelineSpec,
    *,
    assets: Sequence[AssetsDefinition],
    ingestion: PipelineJob,
    stages: Sequence[PipelineJob],
    fallback_cron: str,
    quality: ModelQuality | None = None,
    report_metrics: tuple[str, ...] = (),
    summary: Callable[[str], str] | None = None,
    keys: Callable[[], Sequence[str]] | None = None,
) -> Pipeline:
    """The pipeline's ``Definitions`` (assets, jobs, landing sensor, fallback schedule) and its derived shape.

    ``ingestion``'s first asset lands ``spec.landing_dataset``; its other assets are built from each landed
    day alone. ``stages`` run in order after it for a date (a stage over date x key runs once per key).
    ``keys``: the key dimension's values as configured now (default: its partitions definition's keys).
    """
    ingestion_job = _job(ingestion)
    stage_jobs = [_job(stage) for stage in stages]
    ingestion_asset = _name(ingestion.assets[0])
    landed = {_name(asset) for asset in ingestion.assets}
    downstream = [asset for asset in assets if _name(asset) not in landed]
    keyed = [asset for asset in downstream if isinstance(asset.partitions_def, MultiPartitionsDefinition)]
    keyed_names = {_name(asset) for asset in keyed}
    key_dimension, partition_keys = _key_dimension(keyed)
    dataset = spec.landing_dataset.name
    defs = Definitions(
        assets=with_code_references(assets),
        jobs=[ingestion_job, *stage_jobs],
        sensors=[landing_sensor(dataset, ingestion_asset, ingestion_job)],
        schedules=[daily_fallback_schedule(dataset, ingestion_asset, ingestion_job, fallback_cron)],
    )
    return Pipeline(
        name=spec.name,
        spec=spec,
        defs=defs,
        landing_dataset=dataset,
        ingestion_asset=ingestion_asset,
        ingestion_job=ingestion_job.name,
        landing_window=spec.landing_window,
        landing_day_assets=tuple(_name(asset) for asset in ingestion.assets[1:]),
        daily_assets=tuple(_name(asset) for asset in downstream if _name(asset) not in keyed_names),
        keyed_assets=tuple(_name(asset) for asset in keyed),
        keys=keys or partition_keys,
        key_dimension=key_dimension,
        stages=tuple(
            Stage(
                job.name,
                " -> ".join(_name(asset) for asset in declared.assets),
                per_key=isinstance(job.partitions_def, MultiPartitionsDefinition),
            )
            for job, declared in zip(stage_jobs, stages, strict=True)
        ),
        report_metrics=report_metrics,
        summary=summary,
        quality=_quality(spec, quality),
    )


def load_pipeline(name: str) -> Pipeline:
    return importlib.import_module(pipeline_spec(name).definitions).pipeline


def all_pipelines() -> list[Pipeline]:
    return [importlib.import_module(spec.definitions).pipeline for spec in specs()]
