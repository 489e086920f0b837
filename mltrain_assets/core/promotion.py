"""Registering a gated model version with its lineage, and moving the `staging` alias."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from dagster import AssetExecutionContext, DataVersion, MetadataValue, Output

from mltrain_assets.artifacts import ArtifactRef, read_manifest
from mltrain_assets.core.partitions import partition_date
from mltrain_assets.resources.tracking import ModelRegistry, code_commit, lineage_tags

STAGING_ALIAS = "staging"
SERVED_TAG = "mltrain.served_version"
PROMOTED_TAG = "mltrain.promoted"
REASON_TAG = "mltrain.promotion"
COMPARISON_TAG = "mltrain.champion_challenger"

# (current staging version) -> (challenger wins?, metadata describing the comparison)
ChampionComparison = Callable[[str], tuple[bool, dict[str, Any]]]


def snapshot_with_upstream(refs: dict[str, ArtifactRef]) -> dict[str, Any]:
    """Input URIs and versions, plus what each input was itself built from (its manifest's inputs)."""
    snapshot = {}
    for name, ref in refs.items():
        manifest = read_manifest(ref.uri) or {}
        snapshot[name] = {"uri": ref.uri, "version": ref.version, "inputs": manifest.get("inputs", {})}
    return snapshot


def register_and_promote(
    context: AssetExecutionContext,
    *,
    registry: ModelRegistry,
    model_name: str,
    model_ref: ArtifactRef,
    model_uri: str,
    data_snapshot: dict[str, Any],
    score_metadata: dict[str, Any],
    compare_with_champion: ChampionComparison | None = None,
) -> Output[ArtifactRef]:
    """Register once per lineage; move `staging` unless it holds a newer date or a better model."""
    partition = str(context.partition_key)
    tags = lineage_tags(
        code_commit_sha=code_commit(), data_snapshot=data_snapshot, run_id=context.run.run_id, partition=partition
    )
    registered = registry.register(
        model_name,
        model_uri=model_uri,
        run_id=model_ref.metadata.get("mlflow_run_id"),
        lineage_key=model_ref.version,
        tags={**tags, **{f"mltrain.metric.{k}": str(v) for k, v in score_metadata.items()}},
    )
    recorded = {} if registered.created else registry.version_tags(model_name, registered.version)
    current = registry.alias_version(model_name, STAGING_ALIAS)
    if SERVED_TAG in recorded:
        # Decided when this lineage was first registered: a re-run or backfill replays it, moves nothing.
        promoted = recorded.get(PROMOTED_TAG) == "true"
        reason = f"{recorded.get(REASON_TAG, '')} (decided earlier; unchanged)"
        comparison = json.loads(recorded.get(COMPARISON_TAG, "{}"))
        served = recorded[SERVED_TAG]
    else:
        promoted, reason, comparison = _decide(
            context, registry, model_name, registered.version, current, compare_with_champion
        )
        served = registered.version if promoted else current
        if promoted and current != registered.version:
            registry.set_alias(model_name, STAGING_ALIAS, registered.version)
        for key, value in {
            REASON_TAG: reason,
            PROMOTED_TAG: str(promoted).lower(),
            COMPARISON_TAG: json.dumps(comparison, sort_keys=True),
            SERVED_TAG: served,  # last: its presence means the decision is complete
        }.items():
            registry.set_version_tag(model_name, registered.version, key, value)
    context.log.info(f"{model_name} v{registered.version}: {'promoted' if promoted else 'not promoted'} ({reason})")

    ref = ArtifactRef(
        asset_key=context.asset_key.to_user_string(),
        partition_key=partition,
        version=f"{model_name}/{registered.version}",
        uri=f"models:/{model_name}/{registered.version}",
        metadata={
            "model_name": model_name,
            "model_version": registered.version,
            "created_now": registered.created,
            "promoted": promoted,
            "promotion_reason": reason,
            # The version that serves this date: ours if promoted, else the champion we lost to.
            "served_version": served,
            **comparison,
        },
    )
    metadata = {
        "model": MetadataValue.text(ref.uri),
        "model_version": int(registered.version),
        "registered_now": registered.created,
        "promoted_to_staging": promoted,
        "promotion_reason": reason,
        "previous_staging_version": current or "",
        "mlflow_run": MetadataValue.text(registry.run_link(model_ref.metadata["mlflow_run_id"])),
        **{k: v for k, v in {**score_metadata, **comparison}.items() if v is not None},
    }
    return Output(ref, data_version=DataVersion(ref.version), metadata=metadata)


def _decide(context, registry, model_name, version, current, compare_with_champion) -> tuple[bool, str, dict]:
    """Promote unless `staging` holds a newer date, or (with a comparison) a better model."""
    if current == version:
        return True, f"already `{STAGING_ALIAS}`", {}
    if current is None:
        return True, f"first `{STAGING_ALIAS}` version", {}
    current_partition = registry.version_tags(model_name, current).get("mltrain.partition", "")
    current_date = _date_in(current_partition) or current_partition
    if current_date > partition_date(context.partition_key):
        return (
            False,
            f"`{STAGING_ALIAS}` is v{current} for newer date {current_date}; a backfill does not demote it",
            {},
        )
    if compare_with_champion is not None:
        promoted, comparison = compare_with_champion(current)
        return promoted, ("challenger" if promoted else "champion") + f" wins against v{current}", comparison
    return True, f"replaces v{current} ({current_date})", {}


def _date_in(partition: str) -> str | None:
    """The date inside a partition tag: ``2026-11-27`` or a multi key like ``nyc|2026-11-27``."""
    for part in partition.split("|"):
        if len(part) == 10 and part[4] == "-" and part[7] == "-":
            return part
    return None


def served_model_uri(registered: ArtifactRef) -> str:
    """The model that serves a registered partition: the `staging` version its promotion decision left."""
    return f"models:/{registered.metadata['model_name']}/{registered.metadata['served_version']}"
