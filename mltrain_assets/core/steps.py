"""The one shape every data-plane step shares: version -> skip if committed -> launch -> gate -> reference.

An asset body builds its workload's typed ``Params`` and calls ``run_versioned_step``. The
version (``core.versions``) hashes the asset's code version, its inputs' versions and the params'
versioned fields, so a retry or a backfill of unchanged work finds the committed version and
launches nothing. The step's gates are evaluated on what was committed: each is a blocking check
partitioned like its asset (``core.gate_results``), so every partition (a date, a date x city) has
its own result; its violations travel in the reference (``gate_failures``), which the reference IO
manager refuses to hand to any downstream asset.

Every step records what it cost on its materialization: ``wall_s`` (seconds its launch ran; 0
when the committed version was reused), ``cpu_s`` and ``peak_rss_mb`` of the workload's process
tree (``None`` on ``k8s``, where the run worker cannot see the pod; ``cost_measured`` says how),
``rows_in`` (the rows of its input references) and ``rows_out``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetExecutionContext,
    Backoff,
    DataVersion,
    Failure,
    Jitter,
    MetadataValue,
    Output,
    RetryPolicy,
    TableColumn,
    TableSchema,
)

from mltrain_assets.artifacts import ArtifactRef
from mltrain_assets.core.gate_results import check_results
from mltrain_assets.core.gate_results import gate_specs as gate_specs  # where step assets find it
from mltrain_assets.core.gates import Gate, GateOutcome
from mltrain_assets.core.versions import PRIMARY_TABLE, PlannedVersion, plan_version, ref_from_manifest
from mltrain_assets.core.versions import asset_code_version as asset_code_version  # where step assets find it
from mltrain_assets.resources.compute import Compute, WorkloadProfile, WorkloadResult
from mltrain_assets.resources.storage import GATE_FAILURES, ArtifactStorage, partition_path
from mltrain_assets.workloads.common.params import WorkloadParams

# Every data-plane step: 3 retries, 15 s doubling, with jitter so a fleet of retries doesn't stampede.
DATA_PLANE_RETRY = RetryPolicy(max_retries=3, delay=15, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)


# Summary keys a workload that reads from outside the store reports its input rows under.
_ROWS_IN_KEYS = ("rows_in", "rows_landed")


@dataclass
class StepCost:
    """What a step's data-plane launches cost. Nothing launched (a committed version reused): all zero."""

    wall_s: float = 0.0
    cpu_s: float | None = 0.0
    peak_rss_mb: float | None = 0.0
    launches: int = 0
    measured: str = ""
    # Node index -> pods it took where the cluster replaced one (evicted, preempted), and the seconds they had run.
    pod_attempts: dict[int, int] = field(default_factory=dict)
    seconds_lost: float = 0.0

    def add(self, result: WorkloadResult) -> None:
        self.launches += 1
        self.wall_s += result.wall_s
        self.cpu_s = None if self.cpu_s is None or result.cpu_s is None else self.cpu_s + result.cpu_s
        self.peak_rss_mb = (
            None
            if self.peak_rss_mb is None or result.peak_rss_mb is None
            else max(self.peak_rss_mb, result.peak_rss_mb)
        )
        self.measured = result.measured
        for index, attempts in result.attempts.items():
            self.pod_attempts[index] = self.pod_attempts.get(index, 1) + attempts - 1
        self.seconds_lost += result.seconds_lost

    def share(self, parts: int) -> StepCost:
        """One partition's share of a launch that built ``parts`` partitions (time splits; the peak does not)."""
        if parts <= 1:
            return self
        return StepCost(
            wall_s=self.wall_s / parts,
            cpu_s=None if self.cpu_s is None else self.cpu_s / parts,
            peak_rss_mb=self.peak_rss_mb,
            launches=self.launches,
            measured=self.measured,
            pod_attempts=dict(self.pod_attempts),
            seconds_lost=self.seconds_lost,
        )

    def metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "wall_s": round(self.wall_s, 3),
            "cpu_s": None if self.cpu_s is None else round(self.cpu_s, 3),
            "peak_rss_mb": None if self.peak_rss_mb is None else round(self.peak_rss_mb, 1),
        }
        if self.launches:
            metadata["cost_measured"] = self.measured
        if self.pod_attempts:  # the work survived a disruption: which nodes were replaced, and what it cost
            metadata["pod_attempts"] = {str(index): n for index, n in sorted(self.pod_attempts.items())}
            metadata["seconds_lost"] = round(self.seconds_lost, 1)
        return metadata


def rows_of(refs: Mapping[str, ArtifactRef | str]) -> int:
    """The rows of the committed versions among ``refs`` (references to models and the like count 0)."""
    return sum(int(ref.metadata.get("rows", 0) or 0) for ref in refs.values() if isinstance(ref, ArtifactRef))


@dataclass(frozen=True)
class _Builder:
    """What a step builds with: the store, the compute backend, the launch's timeout and profile, the gates."""

    storage: ArtifactStorage
    compute: Compute
    timeout_s: float | None  # None: the step's configured timeout (MLTRAIN_WORKLOAD_RESOURCES)
    profile: WorkloadProfile
    gates: Sequence[Gate]


def _build(
    context: AssetExecutionContext,
    builder: _Builder,
    planned: Sequence[PlannedVersion],
    params_for: Callable[[dict[str, str]], WorkloadParams],
) -> tuple[dict[str, ArtifactRef], list[GateOutcome], int, StepCost]:
    """``build_versions``, also returning what the launch cost (``StepCost()`` when nothing was launched)."""
    storage, compute = builder.storage, builder.compute
    asset_key = context.asset_key.to_user_string()
    # A render-only launch (`mltrain manifests`) renders even a version already committed.
    missing = {str(p.partition_key): p.uri for p in planned if p.manifest is None or compute.renders_only}
    manifests = {str(p.partition_key): p.manifest for p in planned if p.manifest is not None}
    cost = StepCost()
    if missing:
        cost.add(compute.run(context, params_for(missing), timeout_s=builder.timeout_s, profile=builder.profile))
        for partition, uri in missing.items():
            manifest = storage.committed_manifest(uri)
            if manifest is None:
                raise Failure(
                    description=f"{asset_key} {partition}: the workload finished but committed nothing at {uri}",
                    allow_retries=True,
                )
            manifests[partition] = manifest
    else:
        for p in planned:
            context.log.info(
                f"{asset_key} {partition_path(p.partition_key)}: v={p.version} already committed; no data-plane work"
            )
    refs = {
        str(p.partition_key): ref_from_manifest(
            asset_key, p.partition_key, p.version, p.uri, manifests[str(p.partition_key)], p.built_from
        )
        for p in planned
    }
    summaries = {partition: ref.metadata for partition, ref in refs.items()}
    outcomes = [gate.evaluate(asset_key, summaries) for gate in builder.gates]
    for partition, ref in refs.items():
        ref.metadata[GATE_FAILURES] = [v for outcome in outcomes for v in outcome.violations_by_partition[partition]]
    return refs, outcomes, len(missing), cost


def build_versions(
    context: AssetExecutionContext,
    *,
    storage: ArtifactStorage,
    compute: Compute,
    planned: Sequence[PlannedVersion],
    params_for: Callable[[dict[str, str]], WorkloadParams],
    timeout_s: float | None = None,  # None: the step's configured timeout (MLTRAIN_WORKLOAD_RESOURCES)
    profile: WorkloadProfile = "default",
    gates: Sequence[Gate] = (),
) -> tuple[dict[str, ArtifactRef], list[GateOutcome], int]:
    """Commit every planned version that is missing (one launch), gate them all; ``(refs, outcomes, built)``.

    ``params_for`` receives ``{partition: out_uri}`` of the missing versions and returns the
    one workload launch that commits them. Each partition's materialization records where its
    version is and whether it was reused (``step_metadata``), and its cost:
    an equal share of the launch's time for the partitions it built, zero for those reused, and
    its rows in (what the workload read from outside the store, e.g. ``rows_landed``) and out.
    """
    builder = _Builder(storage, compute, timeout_s, profile, gates)
    refs, outcomes, built, cost = _build(context, builder, planned, params_for)
    partitioned = context.assets_def.partitions_def is not None
    for p in planned:
        ref = refs[str(p.partition_key)]
        was_built = p.manifest is None or compute.renders_only
        rows_in = next((ref.metadata[k] for k in _ROWS_IN_KEYS if isinstance(ref.metadata.get(k), int)), None)
        metadata = {
            **step_metadata(ref, reused=not was_built),
            **(cost.share(built) if was_built else StepCost()).metadata(),
            "rows_out": int(ref.metadata.get("rows", 0) or 0),
            **({"rows_in": rows_in} if rows_in is not None else {}),
        }
        if partitioned:
            context.add_asset_metadata(metadata, partition_key=str(p.partition_key))
        else:
            context.add_output_metadata(metadata)
    return refs, outcomes, built


def run_versioned_step(
    context: AssetExecutionContext,
    *,
    storage: ArtifactStorage,
    compute: Compute,
    params: WorkloadParams,
    inputs: Mapping[str, ArtifactRef | str],
    timeout_s: float | None = None,  # None: the step's configured timeout (MLTRAIN_WORKLOAD_RESOURCES)
    profile: WorkloadProfile = "default",
    gates: Sequence[Gate] = (),
    metadata: Callable[[ArtifactRef], Mapping[str, Any]] | None = None,
) -> Iterator[Output | AssetCheckResult | AssetCheckEvaluation]:
    """The committed version of this partition for these inputs and params (built now if missing), gated."""
    planned = plan_version(context, storage, context.partition_key, inputs, params.versioned_fields())
    builder = _Builder(storage, compute, timeout_s, profile, gates)
    refs, outcomes, built, cost = _build(
        context, builder, [planned], lambda targets: params.with_output(targets[str(planned.partition_key)])
    )
    ref = refs[str(planned.partition_key)]
    yield Output(
        ref,
        data_version=DataVersion(ref.version),
        metadata=step_metadata(
            ref, reused=not built, extra=metadata(ref) if metadata else None, cost=cost, rows_in=rows_of(inputs)
        ),
    )
    yield from check_results(outcomes)


def build_dated_versions(
    context: AssetExecutionContext,
    *,
    storage: ArtifactStorage,
    compute: Compute,
    inputs_by_date: Mapping[str, Mapping[str, ArtifactRef | str]],
    versioned: WorkloadParams,
    params_for: Callable[[dict[str, str]], WorkloadParams],
    profile: WorkloadProfile = "default",
    gates: Sequence[Gate] = (),
) -> tuple[dict[str, ArtifactRef], list[GateOutcome], int]:
    """A range run's versions, one per date from that date's own inputs and ``versioned``'s fields;
    the missing ones built in one launch (``build_versions``)."""
    planned = [
        plan_version(context, storage, date, inputs, versioned.versioned_fields())
        for date, inputs in inputs_by_date.items()
    ]
    missing = sum(p.manifest is None for p in planned)
    if missing:
        context.log.info(f"building {missing} of {len(planned)} date(s); the rest are already committed")
    return build_versions(
        context, storage=storage, compute=compute, planned=planned, params_for=params_for, profile=profile, gates=gates
    )


def versions_output(refs: Mapping[str, ArtifactRef], metadata: Mapping[str, Any]) -> Output:
    """The one Output of a run over one partition (its reference, with its data version) or a range.

    A range's output is ``{partition: ref}``; the reference IO manager writes each partition's own.
    """
    if len(refs) == 1:
        ref = next(iter(refs.values()))
        return Output(ref, data_version=DataVersion(ref.version), metadata=dict(metadata))
    return Output(dict(refs), metadata=dict(metadata))


def step_metadata(
    ref: ArtifactRef,
    reused: bool,
    extra: Mapping[str, Any] | None = None,
    *,
    cost: StepCost | None = None,
    rows_in: int | None = None,
) -> dict[str, Any]:
    """What the UI shows for a materialization: where, which version, whether work was done, key figures.

    With ``cost``: what the step's launch cost (``wall_s``, ``cpu_s``, ``peak_rss_mb``) and
    ``rows_in`` / ``rows_out``.
    """
    metadata: dict[str, Any] = {
        "uri": MetadataValue.path(ref.uri),
        "version": ref.version,
        "reused_committed_version": reused,
        "rows": int(ref.metadata.get("rows", 0)),
    }
    table = ref.metadata.get(PRIMARY_TABLE)
    if table:
        metadata["dagster/row_count"] = table["rows"]
        columns = [TableColumn(column["name"], column["type"]) for column in table["schema"]]
        metadata["dagster/column_schema"] = TableSchema(columns=columns)
    if cost is not None:
        metadata.update(cost.metadata())
        metadata["rows_out"] = metadata["rows"]
    if rows_in is not None:
        metadata["rows_in"] = rows_in
    for key, value in ref.metadata.items():
        short_text = isinstance(value, str) and len(value) < 200
        if key not in metadata and (isinstance(value, (bool, int, float)) or short_text):
            metadata[key] = value
    metadata.update(extra or {})
    return metadata
