"""What a pipeline tells the rest of the code location: its definitions and its shape.

Each ``pipelines/<name>/definitions.py`` exports ``pipeline = Pipeline(...)``; the code
location merges their ``defs``, and the demo, backfill and CLI read the shape from here
instead of knowing any pipeline by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from dagster import Definitions

from mltrain_assets.registry import PIPELINES
from mltrain_assets.workloads.common.dates import Window


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
    defs: Definitions
    landing_dataset: str
    ingestion_asset: str
    ingestion_job: str
    landing_window: Window  # the landed days one date needs, oldest first
    daily_assets: tuple[str, ...]  # downstream assets partitioned by date
    # Per-day assets built from each landed day alone (in the ingestion job, over the landing window).
    landing_day_assets: tuple[str, ...] = ()
    keyed_assets: tuple[str, ...] = ()  # downstream assets partitioned by date x key
    keys: Callable[[], list[str]] | None = None  # the key dimension's values (e.g. configured cities)
    key_dimension: str = ""
    stages: tuple[Stage, ...] = ()
    report_metrics: tuple[str, ...] = ()  # materialization metadata the demo prints per run
    summary: Callable[[str], str] | None = None  # what is registered and served for a date
    quality: QualitySpec | None = None  # what the model quality report shows (None: see reporting.collect)

    def assets(self) -> tuple[str, ...]:
        """Every asset of the pipeline, ingestion first."""
        return (self.ingestion_asset, *self.landing_day_assets, *self.daily_assets, *self.keyed_assets)


def load_pipeline(name: str) -> Pipeline:
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; known: {list(PIPELINES)}")
    return importlib.import_module(f"mltrain_assets.pipelines.{name}.definitions").pipeline


def all_pipelines() -> list[Pipeline]:
    return [load_pipeline(name) for name in PIPELINES]
