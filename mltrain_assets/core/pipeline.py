"""A pipeline's Dagster side, derived from its spec, its asset definitions and its gates.

Each pipeline's ``definitions`` module (named by its ``registry.PipelineSpec``) holds
``pipeline = define_pipeline(spec, ...)`` given its jobs as lists of assets (the assets are theirs) and
its model's quality entry (``model_stage``). Everything the demo, backfill, report and CLI read (asset lists by partitioning,
stage labels, whether a stage runs per key, the quality metric, threshold and direction) is derived
here from those objects, never written again by hand.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
from mltrain_assets.registry import PipelineSpec, Simulator, configured_keys, definitions_module, pipeline_spec, specs
from mltrain_assets.workloads.common.dates import Window

LANDING_METADATA = "landing_dataset"  # an ingestion asset's metadata: the dataset it lands (core/ingestion.py)


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
class Landing:
    """One landing dataset of a pipeline: its ingestion asset and job, the days a date needs, its simulator."""

    dataset: str
    asset: str
    job: str
    window: Window
    simulator: Simulator
    day_assets: tuple[str, ...] = ()  # built from each landed day alone, in the same job


@dataclass(frozen=True, kw_only=True)
class Pipeline:
    """One registered pipeline as the shared code reads it: its definitions and the shape derived from them."""

    name: str
    spec: PipelineSpec
    defs: Definitions
    landings: tuple[Landing, ...]  # one per landing dataset, in the spec's order
    daily_assets: tuple[str, ...]  # downstream assets partitioned by date
    landing_day_assets: tuple[str, ...] = field(default=(), init=False)
    keyed_assets: tuple[str, ...] = ()  # downstream assets partitioned by date x key
    keys: Callable[[], Sequence[str]] | None = None  # the key dimension's values (e.g. configured cities)
    key_dimension: str = ""
    stages: tuple[Stage, ...] = ()
    report_metrics: tuple[str, ...] = ()  # materialization metadata the demo prints per run
    summary: Callable[[str], str] | None = None  # what is registered and served for a date
    quality: QualitySpec | None = None  # what the model quality report shows (None: see reporting.collect)

    def __post_init__(self) -> None:
        # Per-day assets built from each landed day alone (in an ingestion job, over the landing window).
        object.__setattr__(self, "landing_day_assets", tuple(a for x in self.landings for a in x.day_assets))

    @property
    def ingestion_assets(self) -> tuple[str, ...]:
        return tuple(landing.asset for landing in self.landings)

    @property
    def ingestion_asset(self) -> str:
        """The first landing dataset's ingestion asset (the one of a pipeline landing one dataset)."""
        return self.landings[0].asset

    @property
    def ingestion_job(self) -> str:
        return self.landings[0].job

    @property
    def landing_window(self) -> Window:
        """The landed days one date needs, oldest first: the widest of its landing datasets' windows."""
        return max((landing.window for landing in self.landings), key=lambda window: window.days)

    def assets(self) -> tuple[str, ...]:
        """Every asset of the pipeline, ingestion first."""
        return (*self.ingestion_assets, *self.landing_day_assets, *self.daily_assets, *self.keyed_assets)


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


def _landing(spec: PipelineSpec, job: PipelineJob) -> Landing:
    first = job.assets[0]
    dataset = first.metadata_by_key[first.key].get(LANDING_METADATA)
    if dataset is None:
        raise ValueError(f"job {job.name}: its first asset {_name(first)} is not an ingestion asset")
    landing = spec.landing(str(dataset))
    return Landing(
        landing.name,
        _name(first),
        job.name,
        landing.window,
        landing.simulator,
        tuple(_name(a) for a in job.assets[1:]),
    )


def define_pipeline(
    spec: PipelineSpec,
    *,
    ingestion: PipelineJob | Sequence[PipelineJob],
    stages: Sequence[PipelineJob],
    fallback_cron: str,
    quality: ModelQuality | None = None,
    report_metrics: tuple[str, ...] = (),
    summary: Callable[[str], str] | None = None,
) -> Pipeline:
    """The pipeline's ``Definitions`` (the jobs' assets, the jobs, a landing sensor and fallback schedule per
    landing dataset) and its derived shape.

    ``ingestion``: a job per landing dataset of ``spec`` (one, for most pipelines): its first asset lands the
    dataset (``landing_ingestion_asset``), the others are built from each landed day alone. ``stages`` run in
    order after them for a date (a stage over date x key runs once per key of ``spec.keys``).
    """
    ingestion_jobs = [ingestion] if isinstance(ingestion, PipelineJob) else list(ingestion)
    landings = tuple(_landing(spec, job) for job in ingestion_jobs)
    missing = sorted(set(spec.dataset_names()) - {landing.dataset for landing in landings})
    if missing:
        raise ValueError(f"pipeline {spec.name}: no ingestion job lands {missing}")
    jobs = [_job(job) for job in ingestion_jobs]
    stage_jobs = [_job(stage) for stage in stages]
    landed = {_name(asset) for job in ingestion_jobs for asset in job.assets}
    assets = list({_name(a): a for job in (*ingestion_jobs, *stages) for a in job.assets}.values())
    downstream = [asset for asset in assets if _name(asset) not in landed]
    keyed = [asset for asset in downstream if isinstance(asset.partitions_def, MultiPartitionsDefinition)]
    keyed_names = {_name(asset) for asset in keyed}
    key_dimension, partition_keys = _key_dimension(keyed)
    by_name = {job.name: job for job in jobs}
    defs = Definitions(
        assets=with_code_references(assets),
        jobs=[*jobs, *stage_jobs],
        sensors=[landing_sensor(x.dataset, x.asset, by_name[x.job]) for x in landings],
        schedules=[daily_fallback_schedule(x.dataset, x.asset, by_name[x.job], fallback_cron) for x in landings],
    )
    setting = spec.keys
    return Pipeline(
        name=spec.name,
        spec=spec,
        defs=defs,
        landings=landings,
        daily_assets=tuple(_name(asset) for asset in downstream if _name(asset) not in keyed_names),
        keyed_assets=tuple(_name(asset) for asset in keyed),
        # The keys as configured now (the partitions definition holds them as the code location loaded).
        keys=(lambda: configured_keys(setting)) if setting and keyed else partition_keys,
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
    return importlib.import_module(definitions_module(pipeline_spec(name))).pipeline


def all_pipelines() -> list[Pipeline]:
    return [importlib.import_module(definitions_module(spec)).pipeline for spec in specs()]
