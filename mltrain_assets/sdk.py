"""The one public surface a pipeline author imports: ``from mltrain_assets.sdk import ...``.

A pipeline (built-in under ``pipelines/<name>/`` or a plugin package registered through
``MLTRAIN_PIPELINES``) imports nothing else of ``mltrain_assets`` (``test_sdk.py`` holds every
registered pipeline to it). Names resolve lazily (PEP 562): a workload in a pod that imports
``ArtifactWriter`` or ``WorkloadParams`` from here loads only what that name needs, never Dagster;
the Dagster-side names (``workload_asset``, ``model_stage``, ``define_pipeline``, ...) import it
when first used.

What is where, by role:

- spec (dagster-free): ``PipelineSpec``, ``LandingDataset``, ``Simulator``, ``SimulateOption``,
  ``KeySetting``, ``configured_keys``; the dataset contract: ``DatasetSpec``, ``UTC_TS``, ``Window``.
- params (dagster-free): ``WorkloadParams``, ``DistributedParams``, ``MlflowSettings``, ``SparkSettings``, ``workload``,
  ``input_uri``, ``runtime``, ``service``, ``hyperparameter`` (launch config), ``hyperparameter_values``.
- workload code (dagster-free): ``ArtifactWriter``, ``ArtifactRef``, ``read_table``, ``EVENTS_FILE``,
  ``Reporter``, ``workload_main``, ``ensure_experiment``, ``run_tags``, ``use_tracking``; simulators:
  ``day_uri``, ``hour_uri``, ``success_uri``, ``filesystem``.
- Dagster side: ``Step``, ``RangeStep``, ``workload_asset``, ``landing_ingestion_asset``,
  ``model_stage``, ``Registration``, the gates (``metric_above``, ``metric_below``, ``ENGINE_PARITY``),
  partitions (``daily_partitions``, ``window_input``, ``same_days_input``, ``keyed_partitions``),
  ``when_landed_day_ready``, ``define_pipeline``, ``PipelineJob``; the registry facade:
  ``ModelRegistry``, ``register_and_promote``, ``snapshot_with_upstream``, ``served_model_uri``,
  ``staging_version``, ``LINEAGE_TAGS``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> "module:attribute": resolved on first use, so importing this module imports nothing else.
_EXPORTS: dict[str, str] = {
    # the spec and the dataset contract (dagster-free)
    "PipelineSpec": "mltrain_assets.registry:PipelineSpec",
    "LandingDataset": "mltrain_assets.registry:LandingDataset",
    "Simulator": "mltrain_assets.registry:Simulator",
    "SimulateOption": "mltrain_assets.registry:SimulateOption",
    "KeySetting": "mltrain_assets.registry:KeySetting",
    "configured_keys": "mltrain_assets.registry:configured_keys",
    "DatasetSpec": "mltrain_assets.schemas:DatasetSpec",
    "UTC_TS": "mltrain_assets.schemas:UTC_TS",
    "Window": "mltrain_assets.workloads.common.dates:Window",
    # workload params (dagster-free)
    "WorkloadParams": "mltrain_assets.workloads.common.params:WorkloadParams",
    "DistributedParams": "mltrain_assets.workloads.common.params:DistributedParams",
    "MlflowSettings": "mltrain_assets.workloads.common.params:MlflowSettings",
    "workload": "mltrain_assets.workloads.common.params:workload",
    "input_uri": "mltrain_assets.workloads.common.params:input_uri",
    "runtime": "mltrain_assets.workloads.common.params:runtime",
    "service": "mltrain_assets.workloads.common.params:service",
    "hyperparameter": "mltrain_assets.workloads.common.params:hyperparameter",
    "hyperparameter_values": "mltrain_assets.workloads.common.params:hyperparameter_values",
    # workload code and simulators (dagster-free)
    "ArtifactWriter": "mltrain_assets.artifacts:ArtifactWriter",
    "ArtifactRef": "mltrain_assets.artifacts:ArtifactRef",
    "read_table": "mltrain_assets.artifacts:read_table",
    "filesystem": "mltrain_assets.artifacts:filesystem",
    "EVENTS_FILE": "mltrain_assets.workloads.ingest.params:EVENTS_FILE",
    "Reporter": "mltrain_assets.workloads.common.runtime:Reporter",
    "workload_main": "mltrain_assets.workloads.common.runtime:workload_main",
    "ensure_experiment": "mltrain_assets.workloads.common.tracking:ensure_experiment",
    "run_tags": "mltrain_assets.workloads.common.tracking:run_tags",
    "use_tracking": "mltrain_assets.workloads.common.tracking:use_tracking",
    "hour_uri": "mltrain_assets.landing:hour_uri",
    "success_uri": "mltrain_assets.landing:success_uri",
    "day_uri": "mltrain_assets.landing:day_uri",
    "SparkSettings": "mltrain_assets.workloads.common.spark:SparkSettings",
    # the Dagster side: steps, models, gates, partitions, jobs
    "Step": "mltrain_assets.core.assets:Step",
    "RangeStep": "mltrain_assets.core.assets:RangeStep",
    "workload_asset": "mltrain_assets.core.assets:workload_asset",
    "landing_ingestion_asset": "mltrain_assets.core.ingestion:landing_ingestion_asset",
    "model_stage": "mltrain_assets.core.model_stage:model_stage",
    "ModelStage": "mltrain_assets.core.model_stage:ModelStage",
    "Registration": "mltrain_assets.core.model_stage:Registration",
    "Gate": "mltrain_assets.core.gates:Gate",
    "metric_above": "mltrain_assets.core.gates:metric_above",
    "metric_below": "mltrain_assets.core.gates:metric_below",
    "ENGINE_PARITY": "mltrain_assets.core.gates:ENGINE_PARITY",
    "daily_partitions": "mltrain_assets.core.partitions:daily_partitions",
    "window_input": "mltrain_assets.core.partitions:window_input",
    "same_days_input": "mltrain_assets.core.partitions:same_days_input",
    "keyed_partitions": "mltrain_assets.core.partitions:keyed_partitions",
    "when_landed_day_ready": "mltrain_assets.core.automation:when_landed_day_ready",
    "PipelineJob": "mltrain_assets.core.pipeline:PipelineJob",
    "define_pipeline": "mltrain_assets.core.pipeline:define_pipeline",
    # the model registry facade
    "ModelRegistry": "mltrain_assets.resources.tracking:ModelRegistry",
    "LINEAGE_TAGS": "mltrain_assets.resources.tracking:LINEAGE_TAGS",
    "register_and_promote": "mltrain_assets.core.promotion:register_and_promote",
    "snapshot_with_upstream": "mltrain_assets.core.promotion:snapshot_with_upstream",
    "served_model_uri": "mltrain_assets.core.promotion:served_model_uri",
    "staging_version": "mltrain_assets.core.model_stage:staging_version",
    # a step's context, as Dagster passes it to a step's body
    "AssetExecutionContext": "dagster:AssetExecutionContext",
}

__all__ = [  # the same names as _EXPORTS (test_sdk holds them equal)
    "ENGINE_PARITY",
    "EVENTS_FILE",
    "LINEAGE_TAGS",
    "UTC_TS",
    "ArtifactRef",
    "ArtifactWriter",
    "AssetExecutionContext",
    "DatasetSpec",
    "DistributedParams",
    "Gate",
    "KeySetting",
    "LandingDataset",
    "MlflowSettings",
    "ModelRegistry",
    "ModelStage",
    "PipelineJob",
    "PipelineSpec",
    "RangeStep",
    "Registration",
    "Reporter",
    "SimulateOption",
    "Simulator",
    "SparkSettings",
    "Step",
    "Window",
    "WorkloadParams",
    "configured_keys",
    "daily_partitions",
    "day_uri",
    "define_pipeline",
    "ensure_experiment",
    "filesystem",
    "hour_uri",
    "hyperparameter",
    "hyperparameter_values",
    "input_uri",
    "keyed_partitions",
    "landing_ingestion_asset",
    "metric_above",
    "metric_below",
    "model_stage",
    "read_table",
    "register_and_promote",
    "run_tags",
    "runtime",
    "same_days_input",
    "served_model_uri",
    "service",
    "snapshot_with_upstream",
    "staging_version",
    "success_uri",
    "use_tracking",
    "when_landed_day_ready",
    "window_input",
    "workload",
    "workload_asset",
    "workload_main",
]


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attribute = target.partition(":")
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # resolved once: later reads skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each name resolves on first use
    from dagster import AssetExecutionContext

    from mltrain_assets.artifacts import ArtifactRef, ArtifactWriter, filesystem, read_table
    from mltrain_assets.core.assets import RangeStep, Step, workload_asset
    from mltrain_assets.core.automation import when_landed_day_ready
    from mltrain_assets.core.gates import ENGINE_PARITY, Gate, metric_above, metric_below
    from mltrain_assets.core.ingestion import landing_ingestion_asset
    from mltrain_assets.core.model_stage import ModelStage, Registration, model_stage, staging_version
    from mltrain_assets.core.partitions import daily_partitions, keyed_partitions, same_days_input, window_input
    from mltrain_assets.core.pipeline import PipelineJob, define_pipeline
    from mltrain_assets.core.promotion import register_and_promote, served_model_uri, snapshot_with_upstream
    from mltrain_assets.landing import day_uri, hour_uri, success_uri
    from mltrain_assets.registry import (
        KeySetting,
        LandingDataset,
        PipelineSpec,
        SimulateOption,
        Simulator,
        configured_keys,
    )
    from mltrain_assets.resources.tracking import LINEAGE_TAGS, ModelRegistry
    from mltrain_assets.schemas import UTC_TS, DatasetSpec
    from mltrain_assets.workloads.common.dates import Window
    from mltrain_assets.workloads.common.params import (
        DistributedParams,
        MlflowSettings,
        WorkloadParams,
        hyperparameter,
        hyperparameter_values,
        input_uri,
        runtime,
        service,
        workload,
    )
    from mltrain_assets.workloads.common.runtime import Reporter, workload_main
    from mltrain_assets.workloads.common.spark import SparkSettings
    from mltrain_assets.workloads.common.tracking import ensure_experiment, run_tags, use_tracking
    from mltrain_assets.workloads.ingest.params import EVENTS_FILE
