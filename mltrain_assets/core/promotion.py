"""Registering a gated model version with its lineage, and moving the `staging` alias."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dagster import AssetExecutionContext, DataVersion, Failure, MetadataValue, Output

from mltrain_assets.artifacts import ArtifactRef, read_manifest
from mltrain_assets.core.gates import Gate
from mltrain_assets.core.partitions import partition_date
from mltrain_assets.instance.exclusive import exclusive_step
from mltrain_assets.resources.tracking import (
    REGISTRY_POOL,
    SNAPSHOT_ID_TAG,
    SNAPSHOT_URI_TAG,
    AliasMoved,
    ModelRegistry,
    RegisteredVersion,
    code_commit,
    date_in,
    lineage_tags,
    run_artifact_path,
)
from mltrain_assets.workloads.common.tracking import (
    DAGSTER_ASSET_URL_TAG,
    DAGSTER_RUN_ID_TAG,
    DAGSTER_RUN_URL_TAG,
    DATE_TAG,
    PARTITION_TAG,
)

STAGING_ALIAS = "staging"
SERVED_TAG = "mltrain.served_version"
PROMOTED_TAG = "mltrain.promoted"
REASON_TAG = "mltrain.promotion"
COMPARISON_TAG = "mltrain.champion_challenger"
# How many times a decision is made again when `staging` moved under it (a writer outside the pool).
CAS_ATTEMPTS = 3

# (current staging version) -> (challenger wins?, metadata describing the comparison)
ChampionComparison = Callable[[str], tuple[bool, dict[str, Any]]]


def snapshot_with_upstream(refs: dict[str, ArtifactRef]) -> dict[str, Any]:
    """Input URIs and versions, plus what each input was itself built from (its manifest's inputs)."""
    snapshot = {}
    for name, ref in refs.items():
        manifest = read_manifest(ref.uri) or {}
        snapshot[name] = {"uri": ref.uri, "version": ref.version, "inputs": manifest.get("inputs", {})}
    return snapshot


@dataclass(frozen=True)
class _Registration:
    """What a registration step registers, and where: the model's artifact, its scores and gate."""

    registry: ModelRegistry
    model_name: str
    model_ref: ArtifactRef
    score_metadata: dict[str, Any]
    gate: Gate | None

    @property
    def mlflow_run_id(self) -> str | None:
        return self.model_ref.metadata.get("mlflow_run_id")


@dataclass(frozen=True)
class _Decision:
    """A version's promotion decision: made now (and recorded in its tags) or replayed from them."""

    promoted: bool
    reason: str
    comparison: dict[str, Any]
    served: str | None
    current: str | None  # the `staging` version the decision was made on
    decided_now: bool


# What a replayed decision's reason says after the recorded one (alerts send nothing for a replay).
REPLAYED_SUFFIX = " (decided earlier; unchanged)"


def _register(
    context: AssetExecutionContext, registration: _Registration, model_uri: str, data_snapshot: dict[str, Any]
) -> tuple[RegisteredVersion, dict[str, str]]:
    """Register the model once per lineage (the data snapshot recorded on its first registration); its lineage tags."""
    registry, model_name, model_ref = registration.registry, registration.model_name, registration.model_ref
    partition = str(context.partition_key)
    date = partition_date(context.partition_key)
    asset_key = context.asset_key.to_user_string()
    snapshot_uri = ""
    if registration.mlflow_run_id and registry.find_version(model_name, model_ref.version) is None:
        snapshot_uri = registry.record_snapshot(registration.mlflow_run_id, data_snapshot)
    tags = lineage_tags(
        code_commit_sha=code_commit(),
        data_snapshot=data_snapshot,
        data_snapshot_uri=snapshot_uri,
        run_id=context.run.run_id,
        partition=partition,
        date=date,
        dagster_ui_url=registry.dagster_ui,
        asset_key=asset_key,
    )
    metric_tags = {f"mltrain.metric.{k}": str(v) for k, v in registration.score_metadata.items()}
    registered = registry.register(
        model_name,
        model_uri=model_uri,
        run_id=registration.mlflow_run_id,
        lineage_key=model_ref.version,
        tags={**tags, **metric_tags},
    )
    return registered, tags


def _replayed_decision(recorded: dict[str, str], current: str | None) -> _Decision:
    # Decided when this lineage was first registered: a re-run or backfill replays it, moves nothing.
    return _Decision(
        promoted=recorded.get(PROMOTED_TAG) == "true",
        reason=recorded.get(REASON_TAG, "") + REPLAYED_SUFFIX,
        comparison=json.loads(recorded.get(COMPARISON_TAG, "{}")),
        served=recorded[SERVED_TAG],
        current=current,
        decided_now=False,
    )


def _decide_and_record(
    context, registry: ModelRegistry, model_name: str, version: str, current: str | None, compare_with_champion
) -> _Decision:
    """Decide (moving `staging` if promoted) and record the decision in the version's tags."""
    promoted, reason, comparison, current = _decide_and_set(
        context, registry, model_name, version, current, compare_with_champion
    )
    served = version if promoted else current
    assert served is not None  # `_decide` only declines to promote against a current `staging` version
    for key, value in {
        REASON_TAG: reason,
        PROMOTED_TAG: str(promoted).lower(),
        COMPARISON_TAG: json.dumps(comparison, sort_keys=True),
        SERVED_TAG: served,  # last: its presence means the decision is complete
    }.items():
        registry.set_version_tag(model_name, version, key, value)
    return _Decision(promoted, reason, comparison, served, current, decided_now=True)


def _registered_ref(
    context: AssetExecutionContext, model_name: str, registered: RegisteredVersion, decision: _Decision
) -> ArtifactRef:
    """The step's output: the registered version, the decision and the version serving this date."""
    return ArtifactRef(
        asset_key=context.asset_key.to_user_string(),
        partition_key=str(context.partition_key),
        version=f"{model_name}/{registered.version}",
        uri=f"models:/{model_name}/{registered.version}",
        metadata={
            "model_name": model_name,
            "model_version": registered.version,
            "created_now": registered.created,
            "promoted": decision.promoted,
            "promotion_reason": decision.reason,
            # The version that serves this date: ours if promoted, else the champion we lost to.
            "served_version": decision.served,
            **decision.comparison,
        },
    )


def _materialization_metadata(
    registration: _Registration,
    ref: ArtifactRef,
    registered: RegisteredVersion,
    decision: _Decision,
    version_tags: dict[str, str],
) -> dict[str, Any]:
    """The materialization's metadata: the version, the decision, links to the MLflow version, run and snapshot."""
    registry, run_id = registration.registry, registration.mlflow_run_id
    metadata = {
        "model": MetadataValue.text(ref.uri),
        "model_version": int(registered.version),
        "registered_now": registered.created,
        "promoted_to_staging": decision.promoted,
        "promotion_reason": decision.reason,
        "previous_staging_version": decision.current or "",
        "mlflow_model_version": MetadataValue.url(
            registry.version_link(ref.metadata["model_name"], registered.version)
        ),
        "data_snapshot_id": version_tags.get(SNAPSHOT_ID_TAG, ""),
        **{k: v for k, v in {**registration.score_metadata, **decision.comparison}.items() if v is not None},
    }
    if run_id:
        metadata["mlflow_run"] = MetadataValue.url(registry.run_link(run_id))
        if version_tags.get(SNAPSHOT_URI_TAG):
            metadata["data_snapshot"] = MetadataValue.url(
                registry.run_artifact_link(run_id, run_artifact_path(version_tags[SNAPSHOT_URI_TAG]))
            )
    return metadata


@exclusive_step(REGISTRY_POOL)  # one at a time even where the slot claim guard is missing (instance/exclusive.py)
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
    gate: Gate | None = None,
) -> Output[ArtifactRef]:
    """Register once per lineage; move `staging` unless it holds a newer date or a better model.

    The version carries the lineage tags (short: the full data snapshot is an artifact of the
    model's run), links to this Dagster run and asset partition, and a Markdown description a
    person can read: data, gate (``gate``: the model's gate, re-read on its committed summary),
    Dagster run and promotion decision. The materialization links to the MLflow run and version.
    """
    registration = _Registration(registry, model_name, model_ref, score_metadata, gate)
    registered, tags = _register(context, registration, model_uri, data_snapshot)
    recorded = {} if registered.created else registry.version_tags(model_name, registered.version)
    current = registry.alias_version(model_name, STAGING_ALIAS)
    if SERVED_TAG in recorded:
        decision = _replayed_decision(recorded, current)
    else:
        decision = _decide_and_record(context, registry, model_name, registered.version, current, compare_with_champion)
    version_tags = recorded or tags
    if decision.decided_now or not registry.description(model_name, registered.version):
        description = _version_description(registration, registered.version, version_tags, decision)
        registry.set_description(model_name, registered.version, description)
    context.log.info(
        f"{model_name} v{registered.version}: {'promoted' if decision.promoted else 'not promoted'} ({decision.reason})"
    )
    ref = _registered_ref(context, model_name, registered, decision)
    metadata = _materialization_metadata(registration, ref, registered, decision, version_tags)
    return Output(ref, data_version=DataVersion(ref.version), metadata=metadata)


def _version_description(registration: _Registration, version: str, tags: dict[str, str], decision: _Decision) -> str:
    """The version's description in Markdown: data, gate, Dagster run, training run, decision."""
    registry, model_name, model_ref = registration.registry, registration.model_name, registration.model_ref
    partition = tags.get(PARTITION_TAG, model_ref.partition_key)
    run_id = registration.mlflow_run_id
    snapshot = f"`{tags[SNAPSHOT_ID_TAG]}`" if tags.get(SNAPSHOT_ID_TAG) else "not recorded"
    if run_id and tags.get(SNAPSHOT_URI_TAG):
        link = registry.run_artifact_link(run_id, run_artifact_path(tags[SNAPSHOT_URI_TAG]))
        snapshot += f" ([full list]({link}))"
    lines = [
        f"**{model_name} v{version}** trained for **{tags.get(DATE_TAG) or date_in(partition) or '?'}** "
        f"(Dagster partition `{partition}`), model artifact version `{model_ref.version}`.",
        "",
        f"- **Data**: snapshot {snapshot}: the input versions this model was trained and registered from.",
        f"- **Gate**: {_gate_line(registration)}",
    ]
    dagster_run = tags.get(DAGSTER_RUN_ID_TAG, "")
    if dagster_run:
        short = dagster_run[:8]  # as the Dagster UI shows run ids
        run_link = f"[{short}]({tags[DAGSTER_RUN_URL_TAG]})" if tags.get(DAGSTER_RUN_URL_TAG) else f"`{dagster_run}`"
        asset = f" ([asset partition]({tags[DAGSTER_ASSET_URL_TAG]}))" if tags.get(DAGSTER_ASSET_URL_TAG) else ""
        lines.append(f"- **Dagster run**: {run_link}{asset}")
    if run_id:
        lines.append(f"- **MLflow training run**: [{run_id}]({registry.run_link(run_id)})")
    outcome = (
        f"promoted to `{STAGING_ALIAS}`"
        if decision.promoted
        else f"not promoted; `{STAGING_ALIAS}` stays v{decision.served}"
    )
    reason = decision.reason.removesuffix(REPLAYED_SUFFIX)
    compared = "; ".join(f"{k} {_number(v)}" for k, v in sorted(decision.comparison.items()))
    lines.append(f"- **Promotion**: {outcome} ({reason})." + (f" Compared: {compared}." if compared else ""))
    return "\n".join(lines)


def _gate_line(registration: _Registration) -> str:
    """``name`` passed/failed: observed value vs threshold (re-read on the model's committed summary)."""
    gate, model_ref, score_metadata = registration.gate, registration.model_ref, registration.score_metadata
    if gate is None:
        scores = ", ".join(
            f"{k} = {_number(v)}"
            + (f" (threshold {model_ref.metadata[k + '_threshold']})" if f"{k}_threshold" in model_ref.metadata else "")
            for k, v in score_metadata.items()
        )
        return scores or "none recorded"
    violations, observed = gate.rule(model_ref.asset_key, model_ref.partition_key, model_ref.metadata)
    values = {k: v for k, v in observed.items() if k != "threshold"}  # the gated metric first, then its context
    (metric, value), *context = values.items() or [("value", None)]
    verdict = "passed" if not violations else "failed: " + "; ".join(violations)
    line = f"`{gate.name}` {verdict}: observed {metric} = {_number(value)} vs threshold {observed.get('threshold')}"
    if context:
        line += " (" + ", ".join(f"{k} = {_number(v)}" for k, v in context) + ")"
    return f"{line}. {gate.description}"


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _decide_and_set(
    context, registry: ModelRegistry, model_name: str, version: str, current: str | None, compare_with_champion
) -> tuple[bool, str, dict, str | None]:
    """Decide against the `staging` version read, then move it only by compare-and-set against that version.

    ``(promoted, reason, comparison, staging the decision was made on)``. The registration step holds
    the registry pool's one slot, so no other run of this instance writes `staging` meanwhile; a writer
    outside it (another instance, a person in the MLflow UI) makes the compare-and-set refuse, and the
    decision is made again against the version it moved to (up to ``CAS_ATTEMPTS`` times). A decision
    not to move `staging` is re-read the same way: the version it says serves the date still does.
    """
    for _ in range(CAS_ATTEMPTS):
        promoted, reason, comparison = _decide(context, registry, model_name, version, current, compare_with_champion)
        try:
            if promoted and current != version:
                registry.compare_and_set_alias(model_name, STAGING_ALIAS, expected=current, new=version)
            else:
                now = registry.alias_version(model_name, STAGING_ALIAS)
                if now != current:
                    raise AliasMoved(model_name, STAGING_ALIAS, current, now)
            return promoted, reason, comparison, current
        except AliasMoved as moved:
            context.log.warning(f"{moved}; deciding again against {moved.actual and 'v' + moved.actual}")
            current = moved.actual
    raise Failure(
        description=(
            f"`{STAGING_ALIAS}` of {model_name} moved {CAS_ATTEMPTS} times while v{version}'s promotion was "
            f"decided (last seen: {current and 'v' + current}): another writer outside the `{REGISTRY_POOL}` pool "
            "is moving it. Nothing recorded for this decision; run the step again once it stops."
        ),
        allow_retries=True,
    )


def _decide(context, registry, model_name, version, current, compare_with_champion) -> tuple[bool, str, dict]:
    """Promote unless `staging` holds a newer date, or (with a comparison) a better model."""
    if current == version:
        return True, f"already `{STAGING_ALIAS}`", {}
    if current is None:
        return True, f"first `{STAGING_ALIAS}` version", {}
    current_tags = registry.version_tags(model_name, current)
    # `mltrain.date` on versions registered since it exists; older ones carry the date in their partition.
    current_date = current_tags.get(DATE_TAG) or date_in(current_tags.get(PARTITION_TAG, "")) or ""
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


def served_model_uri(registered: ArtifactRef) -> str:
    """The model that serves a registered partition: the `staging` version its promotion decision left."""
    return f"models:/{registered.metadata['model_name']}/{registered.metadata['served_version']}"
