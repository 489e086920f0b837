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
import importlib.util
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

    ``write_day``: ``"module:function"`` (the module may be relative to the spec's package), called as ``function(landing_uri, date, **kwargs)``; it writes
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
class LandingDataset:
    """One dataset a pipeline lands: its contract, the landed days one date needs, how synthetic days are written."""

    dataset: DatasetSpec
    window: Window  # the landed days one date needs, oldest first (demo, backfill)
    simulator: Simulator

    @property
    def name(self) -> str:
        return self.dataset.name


@dataclasses.dataclass(frozen=True)
class KeySetting:
    """A pipeline's key dimension as a deployment configures it, e.g. the cities it models.

    ``env``: the setting listing the keys (comma-separated; empty or unset: all of ``known``);
    ``flag``: the CLI's name for a subset of them; ``what``: one key, as a person says it.
    Parsed in one place (``configured_keys``) for the partitions, the CLI checks and the settings check.
    """

    env: str
    known: tuple[str, ...]
    flag: str
    what: str = "key"

    def parse(self, raw: str | None) -> list[str]:
        """The keys ``raw`` names (``None``/empty: all known ones); a ``ValueError`` naming the setting otherwise."""
        keys = [key.strip() for key in (raw or ",".join(self.known)).split(",") if key.strip()]
        unknown = [key for key in keys if key not in self.known]
        if unknown or not keys:
            raise ValueError(
                f"{self.env}={raw!r}: unknown {self.what} {unknown[0] if unknown else raw!r}: "
                f"expected a comma-separated subset of {', '.join(self.known)}"
            )
        return keys

    def rule(self) -> SettingRule:
        def usable(value: str) -> bool:
            try:
                return bool(self.parse(value))
            except ValueError:
                return False

        return usable, f"a comma-separated subset of {', '.join(self.known)}"


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    """Everything the shared code needs to know of one pipeline.

    ``definitions`` and ``params_modules`` may be relative to the spec's own package (``".definitions"``).
    """

    name: str
    title: str  # as a person reads it, e.g. "Demand forecasting"
    group: str  # its Dagster asset group
    owners: tuple[str, ...]  # its assets' owners in the catalog: "team:name" or an email
    landing_datasets: tuple[LandingDataset, ...]  # what its ingestion assets land, each with its simulator
    params_modules: tuple[str, ...]  # where its WorkloadParams classes live (lineage, reproduce)
    definitions: str  # the module holding its Dagster side: ``pipeline = define_pipeline(...)``
    settings: Mapping[str, SettingRule] = dataclasses.field(default_factory=dict)
    optional_empty_settings: frozenset[str] = frozenset()  # of ``settings``: "" means the default
    keys: KeySetting | None = None  # its key dimension (date x key assets), when it has one
    # Packages its modules lived in before a move -> where they live now (may be relative): manifests written
    # before the move name the old modules, and lineage/reproduce still find their params classes.
    moved_modules: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.landing_datasets or not all(isinstance(d, LandingDataset) for d in self.landing_datasets):
            raise TypeError(f"pipeline {self.name!r}: landing_datasets must be a non-empty tuple of LandingDataset")

    def landing(self, dataset: str) -> LandingDataset:
        for landing in self.landing_datasets:
            if landing.name == dataset:
                return landing
        raise ValueError(f"pipeline {self.name!r} lands no dataset {dataset!r}; it lands {self.dataset_names()}")

    def dataset_names(self) -> list[str]:
        return [landing.name for landing in self.landing_datasets]


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
    _PACKAGES[spec.name] = module.__package__ or ""
    return spec


_PACKAGES: dict[str, str] = {}  # each loaded spec's package: what its relative module names are relative to


def resolve_module(spec: PipelineSpec, name: str) -> str:
    """A module the spec names, absolute (``".definitions"`` is relative to the spec's package)."""
    if not name.startswith("."):
        return name
    if spec.name not in _PACKAGES:
        raise ValueError(f"pipeline {spec.name!r}: {name!r} is relative, but its spec was not loaded by name")
    return importlib.util.resolve_name(name, _PACKAGES[spec.name])


def definitions_module(spec: PipelineSpec) -> str:
    return resolve_module(spec, spec.definitions)


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
    return {landing.name: landing.dataset for spec in specs() for landing in spec.landing_datasets}


def landing_dataset(name: str) -> DatasetSpec:
    datasets = landing_datasets()
    if name not in datasets:
        raise ValueError(f"unknown landing dataset {name!r}; known: {sorted(datasets)}")
    return datasets[name]


def simulator(dataset: str) -> Simulator:
    for spec in specs():
        for landing in spec.landing_datasets:
            if landing.name == dataset:
                module, _, function = landing.simulator.write_day.partition(":")
                return dataclasses.replace(landing.simulator, write_day=f"{resolve_module(spec, module)}:{function}")
    raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(landing_datasets())}")


def landing_pipeline(dataset: str) -> PipelineSpec:
    """The pipeline that lands ``dataset``."""
    for spec in specs():
        if dataset in spec.dataset_names():
            return spec
    raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(landing_datasets())}")


def params_modules() -> tuple[str, ...]:
    """Every module that defines WorkloadParams: ingestion's, then each pipeline's."""
    own = ("mltrain_assets.workloads.ingest.params",)
    return own + tuple(resolve_module(spec, module) for spec in specs() for module in spec.params_modules)


def current_module(module: str) -> str:
    """Where a module a manifest recorded lives now (``PipelineSpec.moved_modules``), else itself."""
    for spec in specs():
        for old, new in spec.moved_modules.items():
            if module == old or module.startswith(old + "."):
                return resolve_module(spec, new) + module[len(old) :]
    return module


def setting_rules() -> dict[str, SettingRule]:
    rules = {name: rule for spec in specs() for name, rule in spec.settings.items()}
    return rules | {spec.keys.env: spec.keys.rule() for spec in specs() if spec.keys}


def optional_empty_settings() -> frozenset[str]:
    own = frozenset().union(*(spec.optional_empty_settings for spec in specs()))
    return own | {spec.keys.env for spec in specs() if spec.keys}


def key_setting(pipeline: str) -> KeySetting | None:
    return pipeline_spec(pipeline).keys


def configured_keys(keys: KeySetting, env: Mapping[str, str] | None = None) -> list[str]:
    """The keys this deployment configures (``keys.env``, default all known): the one parser of that setting."""
    return keys.parse((os.environ if env is None else env).get(keys.env))
