"""The pipelines this code location runs, each declared by one spec (dagster-free).

A pipeline is a plugin: a module holding ``spec = PipelineSpec(...)`` that declares what the
shared code needs of it (its landing datasets and their simulators, its params modules for
``mltrain lineage``/``reproduce``, its own settings, the CLI options it adds) and names the module
of its Dagster side (``definitions``: assets, jobs, quality report). Shared code reads the specs
only; nothing names a pipeline.

``MLTRAIN_PIPELINES`` lists the registered specs (default ``demand,recsys``): a bare name is a
built-in (``mltrain_assets.pipelines.<name>.spec``), a dotted path is any importable module,
e.g. ``my_company.churn.spec``. Every launch passes the setting on, so a workload in a pod
resolves the same datasets.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
from collections.abc import Callable, Mapping
from typing import Any

from mltrain_assets.schemas import DatasetSpec
from mltrain_assets.workloads.common.dates import Window

PIPELINES_ENV = "MLTRAIN_PIPELINES"
BUILT_IN_PIPELINES = ("demand", "recsys")

# (value is usable?, what the setting accepts): the shape of every rule in ``settings.SETTING_RULES``.
SettingRule = tuple[Callable[[str], bool], str]


@dataclasses.dataclass(frozen=True)
class SimulateOption:
    """A ``mltrain simulate`` flag a simulator takes: ``--cities`` -> ``write_day(..., cities=[...])``."""

    flag: str
    kwarg: str
    help: str
    parse: Callable[[str], Any] = str


@dataclasses.dataclass(frozen=True)
class Simulator:
    """How synthetic days of one landing dataset are written.

    ``write_day``: ``"module:function"``, called as ``function(landing_uri, date, **kwargs)``; it writes
    the day's hourly part files then ``_SUCCESS`` and returns a summary with ``rows``.
    ``volume_kwarg``: its rows-per-day argument; ``volume_flag``: the flag ``mltrain demo`` offers for it.
    ``keys_option``: the option (by name) that takes the pipeline's key values (e.g. the configured cities).
    """

    write_day: str
    volume_kwarg: str
    volume_flag: str
    keys_option: str = ""
    options: tuple[SimulateOption, ...] = ()

    def load(self) -> Callable[..., dict]:
        module, _, function = self.write_day.partition(":")
        return getattr(importlib.import_module(module), function)


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    """Everything the shared code needs to know of one pipeline."""

    name: str
    title: str  # as a person reads it, e.g. "Demand forecasting"
    group: str  # its Dagster asset group
    owners: tuple[str, ...]  # its assets' owners in the catalog: "team:name" or an email
    landing_dataset: DatasetSpec  # the dataset its ingestion asset lands (one per pipeline)
    landing_window: Window  # the landed days one date needs, oldest first (demo, backfill)
    simulator: Simulator
    params_modules: tuple[str, ...]  # where its WorkloadParams classes live (lineage, reproduce)
    definitions: str  # the module holding its Dagster side: ``pipeline = define_pipeline(...)``
    settings: Mapping[str, SettingRule] = dataclasses.field(default_factory=dict)
    optional_empty_settings: frozenset[str] = frozenset()  # of ``settings``: "" means the default
    key_flag: str = ""  # ``mltrain backfill``'s name for the key subset, e.g. "--cities"


def entries(env: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    raw = env.get(PIPELINES_ENV) or ",".join(BUILT_IN_PIPELINES)
    return [entry.strip() for entry in raw.split(",") if entry.strip()]


def spec_module(entry: str) -> str:
    return entry if "." in entry else f"mltrain_assets.pipelines.{entry}.spec"


@functools.cache
def load_spec(entry: str) -> PipelineSpec:
    """The spec an ``MLTRAIN_PIPELINES`` entry names; a clear error when it names none."""
    module_name = spec_module(entry)
    try:
        module = importlib.import_module(module_name)
    except ImportError as missing:
        raise ValueError(f"{PIPELINES_ENV}: pipeline {entry!r}: cannot import {module_name} ({missing})") from None
    spec = getattr(module, "spec", None)
    if not isinstance(spec, PipelineSpec):
        raise ValueError(f"{PIPELINES_ENV}: pipeline {entry!r}: {module_name} has no `spec = PipelineSpec(...)`")
    return spec


def specs(env: Mapping[str, str] | None = None) -> list[PipelineSpec]:
    loaded = [load_spec(entry) for entry in entries(env)]
    names = [spec.name for spec in loaded]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{PIPELINES_ENV}: pipeline name(s) registered twice: {repeated}")
    return loaded


def pipeline_names() -> list[str]:
    return [spec.name for spec in specs()]


def pipeline_spec(name: str) -> PipelineSpec:
    by_name = {spec.name: spec for spec in specs()}
    if name not in by_name:
        raise ValueError(f"unknown pipeline {name!r}; known: {list(by_name)} ({PIPELINES_ENV})")
    return by_name[name]


def landing_datasets() -> dict[str, DatasetSpec]:
    """Every landing dataset of every registered pipeline, by name."""
    return {spec.landing_dataset.name: spec.landing_dataset for spec in specs()}


def landing_dataset(name: str) -> DatasetSpec:
    datasets = landing_datasets()
    if name not in datasets:
        raise ValueError(f"unknown landing dataset {name!r}; known: {sorted(datasets)}")
    return datasets[name]


def simulator(dataset: str) -> Simulator:
    for spec in specs():
        if spec.landing_dataset.name == dataset:
            return spec.simulator
    raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(landing_datasets())}")


def params_modules() -> tuple[str, ...]:
    """Every module that defines WorkloadParams: ingestion's, then each pipeline's."""
    own = ("mltrain_assets.workloads.ingest.params",)
    return own + tuple(module for spec in specs() for module in spec.params_modules)


def setting_rules() -> dict[str, SettingRule]:
    return {name: rule for spec in specs() for name, rule in spec.settings.items()}


def optional_empty_settings() -> frozenset[str]:
    return frozenset().union(*(spec.optional_empty_settings for spec in specs()))
