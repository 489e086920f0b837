"""The pipelines this code location runs. Adding a pipeline adds one name here (dagster-free).

A pipeline ``p`` is two folders: ``workloads/p/`` (data plane; ``contract.py`` declares its
windows, thresholds and landing datasets) and ``pipelines/p/`` (control plane; its
``definitions.py`` holds a ``defs`` that the code location merges).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from mltrain_assets.schemas import DatasetSpec

PIPELINES = ("demand", "recsys")


def contract(pipeline: str) -> ModuleType:
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}; known: {list(PIPELINES)}")
    return importlib.import_module(f"mltrain_assets.workloads.{pipeline}.contract")


def landing_datasets() -> dict[str, DatasetSpec]:
    """Every landing dataset of every registered pipeline, by name."""
    specs = [spec for name in PIPELINES for spec in contract(name).LANDING_DATASETS]
    return {spec.name: spec for spec in specs}


def landing_dataset(name: str) -> DatasetSpec:
    datasets = landing_datasets()
    if name not in datasets:
        raise ValueError(f"unknown landing dataset {name!r}; known: {sorted(datasets)}")
    return datasets[name]
