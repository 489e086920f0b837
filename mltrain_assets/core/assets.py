"""The one way a pipeline declares a step asset: what every asset shares, said once.

``step_asset(spec, layer=..., ...)`` is ``@asset`` with the catalog's conventions filled in: the
pipeline's group and owners, ``pipeline``/``layer`` tags, the data-plane retry policy, automation when
the upstream is ready, a blocking check per gate, and the layer's freshness policy (``FRESHNESS``).
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
from dagster import (
    AnchorBasedFilePathMapping,
    AssetsDefinition,
    AutomationCondition,
    BackfillPolicy,
    CodeReferencesMetadataValue,
    FreshnessPolicy,
    LocalFileCodeReference,
    PartitionsDefinition,
    TableColumn,
    TableColumnConstraints,
    TableSchema,
    asset,
    link_code_references_to_git,
    with_source_code_references,
)

from mltrain_assets.artifacts import ArtifactRef
from mltrain_assets.core.automation import when_upstream_ready
from mltrain_assets.core.gates import Gate
from mltrain_assets.core.partitions import daily_partitions
from mltrain_assets.core.report import DEFAULT_GRACE_HOURS
from mltrain_assets.core.steps import DATA_PLANE_RETRY, WorkloadProfile, gate_specs, run_versioned_step
from mltrain_assets.registry import PipelineSpec
from mltrain_assets.workloads.common.params import WorkloadParams

_NOT_NULL = TableColumnConstraints(nullable=False)
CODE_REFERENCES = "dagster/code_references"
LAYERS = ("landed", "aggregates", "features", "embeddings", "model", "registered", "inference", "report")


def _daily(warn_hours: float, fail_hours: float) -> FreshnessPolicy:
    return FreshnessPolicy.time_window(
        warn_window=dt.timedelta(hours=warn_hours), fail_window=dt.timedelta(hours=fail_hours)
    )


# Every layer is rebuilt once a day when its day lands (the landing sensor, then automation): landed data
# warns once a day's cadence plus the landing grace passed without a new day (the report's "late" uses the
# same grace), each later layer 2 h after the one it reads; each fails a day after it warns.
_LANDED_WARN_HOURS = 24 + DEFAULT_GRACE_HOURS
FRESHNESS: dict[str, FreshnessPolicy] = {
    layer: _daily(_LANDED_WARN_HOURS + build_hours, _LANDED_WARN_HOURS + build_hours + 24)
    for layer, build_hours in (
        ("landed", 0),
        ("aggregates", 2),
        ("features", 2),
        ("embeddings", 2),
        ("model", 4),
        ("registered", 4),
        ("inference", 6),
    )
}


def column_schema(schema: pa.Schema) -> TableSchema:
    """A table's columns as the catalog shows them (``dagster/column_schema``), from its Arrow schema."""
    return TableSchema(
        columns=[
            TableColumn(field.name, str(field.type), constraints=None if field.nullable else _NOT_NULL)
            for field in schema
        ]
    )


def code_reference(file_path: str, line_number: int) -> dict[str, CodeReferencesMetadataValue]:
    reference = LocalFileCodeReference(file_path=file_path, line_number=line_number)
    return {CODE_REFERENCES: CodeReferencesMetadataValue(code_references=[reference])}


def declared_here() -> dict[str, CodeReferencesMetadataValue]:
    """A code reference to the line that called the asset factory calling this: where its asset is declared."""
    frame = inspect.stack()[2]
    return code_reference(frame.filename, frame.lineno)


def with_code_references(assets: Sequence[AssetsDefinition]) -> list[AssetsDefinition]:
    """Each asset linked to the lines that define it: on ``MLTRAIN_GIT_URL`` at the running commit when set, else locally."""
    from mltrain_assets.resources.tracking import code_commit

    # A workload asset already points at its body (``workload_asset``): Dagster's own reference would name the wrapper.
    located = [asset for asset in assets if CODE_REFERENCES in asset.metadata_by_key[asset.key]]
    # Dagster's helpers return the definitions they are given (declared as any asset-like one): AssetsDefinitions.
    referenced = cast(
        list[AssetsDefinition], [*with_source_code_references([a for a in assets if a not in located]), *located]
    )
    git_url = os.environ.get("MLTRAIN_GIT_URL", "")
    commit = code_commit().removesuffix("-dirty") if git_url else "unknown"
    if commit == "unknown":
        return list(referenced)
    return cast(
        list[AssetsDefinition],
        list(
            link_code_references_to_git(
                referenced,
                git_url=git_url,
                git_branch=commit,  # a commit pins the link to the code that runs, where a branch would move on
                file_path_mapping=AnchorBasedFilePathMapping(
                    # The folder holding the package: the checkout, or site-packages in an image (same relative paths).
                    local_file_anchor=Path(__file__).resolve().parents[2],
                    file_anchor_path_in_repository="",
                ),
            )
        ),
    )


def catalog_tags(spec: PipelineSpec, layer: str) -> dict[str, str]:
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}; known: {LAYERS}")
    return {"pipeline": spec.name, "layer": layer}


def step_asset(
    spec: PipelineSpec,
    *,
    layer: str,
    kinds: set[str],
    partitions_def: PartitionsDefinition = daily_partitions,
    description: str | None = None,  # None: the body's docstring
    code_version: str = "1",
    ins: Mapping[str, Any] | None = None,
    pool: str | None = None,
    gates: Sequence[Gate] = (),
    backfill_policy: BackfillPolicy | None = None,
    automation_condition: AutomationCondition | None = None,
    required_resource_keys: set[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], AssetsDefinition]:
    """``@asset`` for one step of ``spec``'s pipeline, named and described by the decorated function."""

    def decorate(body: Callable[..., Any]) -> AssetsDefinition:
        name = body.__name__
        return asset(
            name=name,
            partitions_def=partitions_def,
            ins=dict(ins or {}),
            code_version=code_version,
            group_name=spec.group,
            owners=list(spec.owners),
            tags=catalog_tags(spec, layer),
            kinds=kinds,
            pool=pool,
            retry_policy=DATA_PLANE_RETRY,
            backfill_policy=backfill_policy,
            automation_condition=automation_condition or when_upstream_ready(),
            check_specs=gate_specs(name, gates, partitions_def),
            freshness_policy=FRESHNESS[layer],
            description=description or inspect.getdoc(body),
            required_resource_keys=required_resource_keys,
            metadata=metadata,
        )(body)

    return decorate


def registration_asset(spec: PipelineSpec, **asset_args: Any) -> Callable[[Callable[..., Any]], AssetsDefinition]:
    """A step that registers a model (``core.promotion.register_and_promote``). The ``registry`` pool has one
    slot (MLTRAIN_POOL_LIMITS), so registrations and promotions never overlap."""
    return step_asset(spec, layer="registered", kinds={"mlflow"}, pool="registry", **asset_args)


@dataclass(frozen=True)
class Step:
    """What a workload asset builds for its partition: the workload's params and the references they read."""

    params: WorkloadParams
    inputs: Mapping[str, ArtifactRef | str]
    metadata: Callable[[ArtifactRef], Mapping[str, Any]] | None = None  # extra materialization metadata


def workload_asset(
    spec: PipelineSpec, workload: type[WorkloadParams], *, gates: Sequence[Gate] = (), **asset_args: Any
) -> Callable[[Callable[..., Step]], AssetsDefinition]:
    """A step asset whose body only says how to run ``workload`` on its inputs (it returns a ``Step``).

    The asset's code version, kinds and resource profile are the workload's (``WorkloadParams``); a Spark
    or training workload takes a slot of the pool of the same name (``MLTRAIN_POOL_LIMITS``). Planning the
    version, launching on the ``compute`` resource, committing to ``storage`` and evaluating ``gates`` are
    ``core.steps.run_versioned_step``'s.
    """
    profile = cast(WorkloadProfile, workload.profile)
    if profile != "default":
        asset_args.setdefault("pool", profile)

    def decorate(body: Callable[..., Step]) -> AssetsDefinition:
        def run(context, **inputs: Any) -> Iterator[Any]:
            step = body(context, **inputs)
            if not isinstance(step.params, workload):
                raise TypeError(f"{body.__name__} declares {workload.__name__} but built {type(step.params).__name__}")
            yield from run_versioned_step(
                context,
                storage=context.resources.storage,
                compute=context.resources.compute,
                params=step.params,
                inputs=step.inputs,
                profile=profile,
                gates=gates,
                metadata=step.metadata,
            )

        functools.update_wrapper(run, body)
        # Dagster reads the inputs from the body's signature; the output type is the IO manager's reference.
        # inspect reads a function's __signature__; typeshed's function type does not declare it.
        run.__signature__ = inspect.signature(body).replace(return_annotation=inspect.Signature.empty)  # type: ignore[attr-defined]
        return step_asset(
            spec,
            code_version=workload.code_version,
            kinds=set(workload.kinds),
            gates=gates,
            required_resource_keys={"storage", "compute"},
            metadata=code_reference(inspect.getsourcefile(body) or "", inspect.getsourcelines(body)[1]),
            **asset_args,
        )(run)

    return decorate
