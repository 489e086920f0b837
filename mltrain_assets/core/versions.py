"""Planning a step's version: what it hashes, where it lives, whether it is committed, and its reference.

A version hashes the asset's code version (its workload's, derived from the source unless overridden:
``workloads.common.code_version``), its inputs' versions and its params' versioned fields (hyperparameters
included), so changed code, inputs or tuning land on a new path and unchanged work finds its committed
version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dagster import AssetExecutionContext

from mltrain_assets.artifacts import ArtifactRef, compute_version
from mltrain_assets.resources.storage import BUILT_FROM, ArtifactStorage

# In a reference's metadata: its version's main table ({name, rows, schema}), for the catalog.
PRIMARY_TABLE = "primary_table"
# Small summary values that travel with a reference (the manifest holds everything).
_REF_METADATA_LIMIT = 2_000


def asset_code_version(context: AssetExecutionContext) -> str:
    return context.assets_def.code_versions_by_key.get(context.asset_key) or "unversioned"


def version_of(code_version: str, inputs: Mapping[str, ArtifactRef | str], params: Mapping[str, Any]) -> str:
    """The version a step plans: its code version, its inputs' versions (a reference's, or a string as is), params."""
    versions = {k: (v.version if isinstance(v, ArtifactRef) else v) for k, v in inputs.items()}
    return compute_version(code_version, versions, params)


@dataclass(frozen=True)
class PlannedVersion:
    """Where one partition's version lives, its manifest if it is already committed, and what it is built from."""

    partition_key: Any
    version: str
    uri: str
    manifest: dict | None
    built_from: tuple[dict[str, str], ...] = ()  # the input references' asset, partition and version


def plan_version(
    context: AssetExecutionContext,
    storage: ArtifactStorage,
    partition_key: Any,
    inputs: Mapping[str, ArtifactRef | str],
    params: Mapping[str, Any],
) -> PlannedVersion:
    version = version_of(asset_code_version(context), inputs, params)
    uri = storage.version_uri(context.asset_key.to_user_string(), partition_key, version)
    built_from = tuple(
        {"asset": ref.asset_key, "partition": ref.partition_key, "version": ref.version}
        for ref in inputs.values()
        if isinstance(ref, ArtifactRef)
    )
    return PlannedVersion(partition_key, version, uri, storage.committed_manifest(uri), built_from)


def _primary_table(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """The version's main table (its largest file with a schema): the catalog's row count and column schema."""
    tables = [(name, entry) for name, entry in (manifest.get("files") or {}).items() if entry.get("schema")]
    if not tables:
        return None
    name, entry = max(tables, key=lambda item: (item[1].get("rows", 0), item[0]))
    return {"name": name, "rows": int(entry.get("rows", 0)), "schema": entry["schema"]}


def ref_from_manifest(
    asset_key: str, partition_key: Any, version: str, uri: str, manifest: dict, built_from: Sequence[dict] = ()
) -> ArtifactRef:
    """The reference to a committed version, carrying its small summary values and the inputs it was built from."""
    summary = {k: v for k, v in (manifest.get("summary") or {}).items() if len(repr(v)) <= _REF_METADATA_LIMIT}
    return ArtifactRef(
        asset_key=asset_key,
        partition_key=str(partition_key),
        version=version,
        uri=uri,
        metadata={
            **summary,
            "rows": manifest.get("rows", 0),
            BUILT_FROM: list(built_from),
            PRIMARY_TABLE: _primary_table(manifest),
        },
    )
