"""Landing-zone ingestion assets (``ride_events``, ``user_interactions``): one factory, one contract."""

import hashlib
import json

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    DataVersion,
    Failure,
    FreshnessPolicy,
    MetadataValue,
    Output,
    asset,
)

from mltrain_assets.artifacts import compute_version
from mltrain_assets.assets.steps import (
    DATA_PLANE_RETRY,
    asset_code_version,
    cli_args,
    ref_from_manifest,
    require_committed,
)
from mltrain_assets.checks.data_gates import landed_complete, matches_contract
from mltrain_assets.landing import day_status, success_uri
from mltrain_assets.partitions import daily_partitions
from mltrain_assets.resources.compute import ComputeBackend
from mltrain_assets.resources.storage import ArtifactStorage
from mltrain_assets.schemas import DATASETS
from mltrain_assets.workloads.ingest import INGEST_CODE_VERSION

INGEST_TIMEOUT_S = 1800
INGEST_WORKLOAD = "mltrain_assets.workloads.ingest"


def landing_fingerprint(status: dict) -> str:
    """What the landed day is: its marker and every part file with its size."""
    payload = json.dumps({"marker": status["marker_sha256"], "files": status["files"]}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def landing_ingestion_asset(
    *, name: str, dataset: str, group_name: str, description: str, freshness_policy: FreshnessPolicy | None = None
):
    """A daily asset that validates, deduplicates and versions one landing dataset.

    A single run may cover a range of dates (single-run backfills): one workload
    ingests every date whose version is not yet committed.
    """
    spec = DATASETS[dataset]
    checks = [
        AssetCheckSpec(
            "landed_complete",
            asset=name,
            blocking=True,
            description="All 24 hourly buckets arrived with plausible counts, and the day has enough rows.",
        ),
        AssetCheckSpec(
            "matches_contract",
            asset=name,
            blocking=True,
            description="Landed files match the schema; rows breaking value rules were quarantined (<= 1%).",
        ),
    ]

    @asset(
        name=name,
        partitions_def=daily_partitions,
        backfill_policy=BackfillPolicy.single_run(),
        code_version=INGEST_CODE_VERSION,
        group_name=group_name,
        description=description,
        kinds={"python", "parquet"},
        retry_policy=DATA_PLANE_RETRY,
        check_specs=checks,
        freshness_policy=freshness_policy,
        metadata={"landing_dataset": dataset},
    )
    def _ingest(context: AssetExecutionContext, storage: ArtifactStorage, compute: ComputeBackend):
        dates = list(context.partition_keys)
        statuses = {date: day_status(storage.landing_uri, dataset, date) for date in dates}
        not_landed = [date for date in dates if not statuses[date]["success"]]
        if not_landed:
            details = "; ".join(
                f"{name} {date}: rule landing_complete: no _SUCCESS marker at "
                f"{success_uri(storage.landing_uri, dataset, date)} ({len(statuses[date]['hours'])}/24 hourly buckets present)"
                for date in not_landed
            )
            raise Failure(description=details, allow_retries=False)

        code_version = asset_code_version(context)
        planned, manifests = {}, {}
        for date in dates:
            version = compute_version(code_version, {"landing": landing_fingerprint(statuses[date])})
            planned[date] = (version, storage.version_uri(name, date, version))
            manifests[date] = storage.committed_manifest(planned[date][1])
        targets = {date: planned[date][1] for date in dates if manifests[date] is None}
        if targets:
            context.log.info(f"ingesting {len(targets)} of {len(dates)} date(s); the rest are already committed")
            args = cli_args(dataset=dataset, landing_uri=storage.landing_uri, targets=json.dumps(targets))
            compute.run_workload(context, INGEST_WORKLOAD, args, timeout_s=INGEST_TIMEOUT_S)
            manifests.update({date: require_committed(storage, INGEST_WORKLOAD, uri) for date, uri in targets.items()})
        refs = {date: ref_from_manifest(name, date, *planned[date], manifests[date]) for date in dates}

        summaries = {date: ref.metadata for date, ref in refs.items()}
        gates = [landed_complete(name, summaries, spec.min_rows_per_day), matches_contract(name, summaries)]
        for date, ref in refs.items():
            ref.metadata["gate_failures"] = [v for gate in gates for v in gate.violations if f" {date}:" in v]

        metadata = {
            "dates": len(dates),
            "dates_ingested_now": len(targets),
            "rows": sum(int(r.metadata.get("rows", 0)) for r in refs.values()),
            "duplicates_removed": sum(int(r.metadata.get("duplicates_removed", 0)) for r in refs.values()),
            "rows_rejected": sum(int(r.metadata.get("rows_rejected", 0)) for r in refs.values()),
        }
        if len(dates) == 1:
            ref = refs[dates[0]]
            metadata.update({"uri": MetadataValue.path(ref.uri), "version": ref.version})
            yield Output(ref, data_version=DataVersion(ref.version), metadata=metadata)
        else:
            # One output covers the range; each partition's version lives in its reference.
            metadata["versions"] = MetadataValue.json(
                {d: {"uri": r.uri, "version": r.version} for d, r in refs.items()}
            )
            yield Output(refs, metadata=metadata)
        for gate in gates:
            yield AssetCheckResult(
                check_name=gate.name,
                passed=gate.passed,
                severity=AssetCheckSeverity.ERROR,
                description=gate.describe(),
                metadata={"partitions": MetadataValue.json(gate.observed), "violations": len(gate.violations)},
            )

    return _ingest
