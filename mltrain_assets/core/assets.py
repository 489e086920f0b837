"""The one way a pipeline declares a step asset: what every asset shares, said once.

``step_asset(spec, layer=..., ...)`` is ``@asset`` with the catalog's conventions filled in: the
pipeline's group and owners, ``pipeline``/``layer`` tags, the data-plane retry policy, automation when
the upstream is ready, a blocking check per gate, and the layer's freshness policy (``FRESHNESS``).
"""

from __future__ import annotations

import dataclasses
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
from mltrain_assets.core.gate_results import check_results, gate_specs
from mltrain_assets.core.gates import Gate
from mltrain_assets.core.launch_config import code_version_metadata, config_class, tuned
from mltrain_assets.core.partitions import daily_partitions
from mltrain_assets.core.report import DEFAULT_GRACE_HOURS
from mltrain_assets.core.steps import (
    DATA_PLANE_RETRY,
    WorkloadProfile,
    build_dated_versions,
    run_versioned_step,
    versions_output,
)
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


# ``step_asset``'s default automation: run when the upstream is ready (``None``: no automation, e.g. ingestion).
UPSTREAM_READY: Any = object()


def step_asset(
    spec: PipelineSpec,
    *,
    layer: str,
    name: str | None = None,  # None: the body's name
    kinds: set[str],
    partitions_def: PartitionsDefinition = daily_partitions,
    description: str | None = None,  # None: the body's docstring
    code_version: str = "1",
    ins: Mapping[str, Any] | None = None,
    pool: str | None = None,
    gates: Sequence[Gate] = (),
    backfill_policy: BackfillPolicy | None = None,
    automation_condition: AutomationCondition | None = UPSTREAM_READY,
    required_resource_keys: set[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], AssetsDefinition]:
    """``@asset`` for one step of ``spec``'s pipeline, named and described by the decorated function."""

    def decorate(body: Callable[..., Any]) -> AssetsDefinition:
        asset_name = name or body.__name__
        return asset(
            name=asset_name,
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
            automation_condition=when_upstream_ready()
            if automation_condition is UPSTREAM_READY
            else automation_condition,
            check_specs=gate_specs(asset_name, gates, partitions_def),
            freshness_policy=FRESHNESS[layer],
            description=description or inspect.getdoc(body),
            required_resource_keys=required_resource_keys,
            metadata=metadata,
        )(body)

    return decorate


@dataclass(frozen=True)
class Step:
    """What a workload asset builds for its partition: the workload's params and the references they read."""

    params: WorkloadParams
    inputs: Mapping[str, ArtifactRef | str]
    metadata: Callable[[ArtifactRef], Mapping[str, Any]] | None = None  # extra materialization metadata


@dataclass(frozen=True)
class RangeStep:
    """What a range step builds: one version per date from that date's own inputs, the missing ones in one launch.

    A range run (a single-run backfill, the demo's landing window) covers many dates; ``versioned`` holds the
    fields every date's version is planned from, ``params_for({date: version folder})`` the launch's params.
    """

    inputs_by_date: Mapping[str, Mapping[str, ArtifactRef | str]]
    versioned: WorkloadParams
    params_for: Callable[[dict[str, str]], WorkloadParams]
    built_key: str = "dates_built_now"  # the run's metadata key counting the dates built (not reused)
    metadata: Callable[[str, ArtifactRef], Mapping[str, Any]] | None = None  # a date's own materialization metadata
    run_metadata: Callable[[Mapping[str, ArtifactRef]], Mapping[str, Any]] | None = None


def _run_range(context: Any, step: RangeStep, profile: WorkloadProfile, gates: Sequence[Gate]) -> Iterator[Any]:
    refs, outcomes, built = build_dated_versions(
        context,
        storage=context.resources.storage,
        compute=context.resources.compute,
        inputs_by_date=step.inputs_by_date,
        versioned=step.versioned,
        params_for=step.params_for,
        profile=profile,
        gates=gates,
    )
    for date, ref in refs.items():
        if step.metadata is not None:
            context.add_asset_metadata(dict(step.metadata(date, ref)), partition_key=date)
    extra = step.run_metadata(refs) if step.run_metadata is not None else {}
    yield versions_output(refs, {"dates_in_run": len(refs), step.built_key: built, **extra})
    yield from check_results(outcomes)


def workload_asset(
    spec: PipelineSpec,
    workload: type[WorkloadParams],
    *,
    gates: Sequence[Gate] = (),
    over_range: bool = False,
    **asset_args: Any,
) -> Callable[[Callable[..., Step | RangeStep]], AssetsDefinition]:
    """A step asset whose body only says how to run ``workload`` on its inputs (it returns a ``Step``).

    ``over_range``: one run may cover many dates (a single-run backfill); the body returns a ``RangeStep``
    and each date gets its own version, metadata and gate results.

    The asset's code version, kinds and resource profile are the workload's (``WorkloadParams``); a Spark
    or training workload takes a slot of the pool of the same name (``MLTRAIN_POOL_LIMITS``). Planning the
    version, launching on the ``compute`` resource, committing to ``storage`` and evaluating ``gates`` are
    ``core.steps.run_versioned_step``'s.
    """
    profile = cast(WorkloadProfile, workload.profile)
    if profile != "default":
        asset_args.setdefault("pool", profile)
    if over_range:
        asset_args.setdefault("backfill_policy", BackfillPolicy.single_run())
    extra_metadata = dict(asset_args.pop("metadata", None) or {})

    def decorate(body: Callable[..., Step | RangeStep]) -> AssetsDefinition:
        # The workload's hyperparameters are the asset's launch config (None: it has none).
        launch = config_class(body.__name__, workload)

        def run(context, **inputs: Any) -> Iterator[Any]:
            config = inputs.pop("config", None)
            step = body(context, **inputs)
            if isinstance(step, Step):
                step = dataclasses.replace(step, params=tuned(body.__name__, step.params, config))
            if isinstance(step, RangeStep):
                if not over_range or not isinstance(step.versioned, workload):
                    raise TypeError(f"{body.__name__}: a RangeStep of {workload.__name__} needs over_range=True")
                yield from _run_range(context, step, profile, gates)
                return
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
        signature = inspect.signature(body).replace(return_annotation=inspect.Signature.empty)
        if launch is not None:  # Dagster finds the config by the `config` parameter and its Config annotation
            context_arg, *body_args = signature.parameters.values()
            config_arg = inspect.Parameter("config", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=launch)
            signature = signature.replace(parameters=[context_arg, config_arg, *body_args])
        run.__signature__ = signature  # type: ignore[attr-defined]
        return step_asset(
            spec,
            code_version=workload.code_version,
            kinds=set(workload.kinds),
            gates=gates,
            required_resource_keys={"storage", "compute"},
            # Where the step is declared: the body, unless the factory calling this names its caller's line.
            metadata={
                **code_reference(inspect.getsourcefile(body) or "", inspect.getsourcelines(body)[1]),
                **code_version_metadata(workload),
                **extra_metadata,
            },
            **asset_args,
        )(run)

    return decorate
