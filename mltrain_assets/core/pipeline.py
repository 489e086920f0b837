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
class Pipeline:
    name: str
    defs: Definitions
    landing_dataset: str
    ingestion_asset: str
    ingestion_job: str
    landing_window: Window  # the landed days one date needs, oldest first
    daily_assets: tuple[str, ...]  # downstream assets partitioned by date
    keyed_assets: tuple[str, ...] = ()  # downstream assets partitioned by date x key
    keys: Callable[[], list[str]] | None = None  # the key dimension's values (e.g. configured cities)
    key_dimension: str = ""
    stages: tuple[Stage, ...] = ()
    report_metrics: tuple[str, ...] = ()  # materialization metadata the demo prints per run
    summary: Callable[[str], str] | None = None  # what is registered and served for a date


def load_pipeline(name: str) -> Pipeline:
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; known: {list(PIPELINES)}")
    return importlib.import_module(f"mltrain_assets.pipelines.{name}.definitions").pipeline


def all_pipelines() -> list[Pipeline]:
    return [load_pipeline(name) for name in PIPELINES]
