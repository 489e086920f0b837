"""The one shape every data-plane step shares: version, skip if committed, launch, reference.

An asset body resolves its inputs' references, then calls ``run_versioned_step``:
the version hashes the asset's code version with its inputs' versions, so a retry or
a backfill of unchanged work finds the committed version and launches nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dagster import (
    AssetExecutionContext,
    Backoff,
    DataVersion,
    Failure,
    Jitter,
    MetadataValue,
    Output,
    RetryPolicy,
)

from mltrain_assets.artifacts import ArtifactRef, compute_version
from mltrain_assets.partitions import partition_path
from mltrain_assets.resources.compute import ComputeBackend, WorkloadProfile
from mltrain_assets.resources.storage import ArtifactStorage

# Every data-plane step: 3 retries, 15 s doubling, with jitter so a fleet of retries doesn't stampede.
DATA_PLANE_RETRY = RetryPolicy(max_retries=3, delay=15, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)

# Small summary values that travel with a reference (the manifest holds everything).
_REF_METADATA_LIMIT = 2_000


def asset_code_version(context: AssetExecutionContext) -> str:
    return context.assets_def.code_versions_by_key.get(context.asset_key) or "unversioned"


def cli_args(**flags: Any) -> list[str]:
    """``--flag value`` pairs for a workload's command line, in order (``out_uri`` -> ``--out-uri``)."""
    return [part for name, value in flags.items() for part in (f"--{name.replace('_', '-')}", str(value))]


def require_gates_passed(context: AssetExecutionContext, refs: Mapping[str, ArtifactRef]) -> None:
    """Refuse to build on an input whose gates failed, whichever run produced it."""
    failures = [f for ref in refs.values() for f in ref.metadata.get("gate_failures", [])]
    if failures:
        raise Failure(
            description=f"{context.asset_key.to_user_string()} is blocked by failed upstream gates: "
            + "; ".join(failures),
            allow_retries=False,
        )


def ref_from_manifest(asset_key: str, partition_key: Any, version: str, uri: str, manifest: dict) -> ArtifactRef:
    """The reference to a committed version, carrying its small summary values."""
    summary = {k: v for k, v in (manifest.get("summary") or {}).items() if len(repr(v)) <= _REF_METADATA_LIMIT}
    return ArtifactRef(
        asset_key=asset_key,
        partition_key=str(partition_key),
        version=version,
        uri=uri,
        metadata={**summary, "rows": manifest.get("rows", 0)},
    )


def require_window(
    context: AssetExecutionContext, upstream: str, refs: ArtifactRef | dict[str, ArtifactRef], dates: list[str]
) -> dict[str, ArtifactRef]:
    """A trailing window of upstream references, in date order: all materialized, all gates passed."""
    refs = refs if isinstance(refs, dict) else {dates[0]: refs}
    missing = [d for d in dates if d not in refs]
    if missing:
        raise Failure(
            description=(
                f"{context.asset_key.to_user_string()} {context.partition_key} needs {upstream} for "
                f"{dates[0]}..{dates[-1]}; {len(missing)} partition(s) are not materialized: "
                f"{missing[:10]}{' ...' if len(missing) > 10 else ''}"
            ),
            allow_retries=False,
        )
    window = {d: refs[d] for d in dates}
    require_gates_passed(context, window)
    return window


def run_versioned_step(
    context: AssetExecutionContext,
    *,
    storage: ArtifactStorage,
    compute: ComputeBackend,
    partition_key: Any,
    inputs: Mapping[str, ArtifactRef | str | None],
    workload: str,
    build_args: Callable[[str], list[str]],
    timeout_s: float,
    profile: WorkloadProfile = "default",
    params: Mapping[str, Any] | None = None,
) -> tuple[ArtifactRef, bool]:
    """Return ``(ref, reused)``: the committed version for these inputs, built now if missing."""
    asset_key = context.asset_key.to_user_string()
    versions = {k: (v.version if isinstance(v, ArtifactRef) else v) for k, v in inputs.items()}
    version = compute_version(asset_code_version(context), versions, params)
    out_uri = storage.version_uri(asset_key, partition_key, version)
    manifest = storage.committed_manifest(out_uri)
    reused = manifest is not None
    if reused:
        context.log.info(
            f"{asset_key} {partition_path(partition_key)}: v={version} already committed; no data-plane work"
        )
    else:
        compute.run_workload(context, workload, build_args(out_uri), timeout_s=timeout_s, profile=profile)
        manifest = require_committed(storage, workload, out_uri)
    return ref_from_manifest(asset_key, partition_key, version, out_uri, manifest), reused


def require_committed(storage: ArtifactStorage, workload: str, uri: str) -> dict:
    manifest = storage.committed_manifest(uri)
    if manifest is None:
        raise Failure(description=f"{workload} finished but committed nothing at {uri}", allow_retries=True)
    return manifest


def step_metadata(ref: ArtifactRef, reused: bool, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What the UI shows for a materialization: where, which version, whether work was done, key figures."""
    metadata: dict[str, Any] = {
        "uri": MetadataValue.path(ref.uri),
        "version": ref.version,
        "reused_committed_version": reused,
        "rows": int(ref.metadata.get("rows", 0)),
    }
    for key, value in ref.metadata.items():
        short_text = isinstance(value, str) and len(value) < 200
        if key not in metadata and (isinstance(value, (bool, int, float)) or short_text):
            metadata[key] = value
    metadata.update(extra or {})
    return metadata


def versioned_output(ref: ArtifactRef, reused: bool, extra: Mapping[str, Any] | None = None) -> Output[ArtifactRef]:
    return Output(ref, data_version=DataVersion(ref.version), metadata=step_metadata(ref, reused, extra))
