"""Landing-zone ingestion assets: one factory for every landing dataset of every pipeline."""

import hashlib
import json

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    DataVersion,
    Failure,
    FreshnessPolicy,
    MetadataValue,
    Output,
    asset,
)

from mltrain_assets.core.gates import MATCHES_CONTRACT, landed_complete
from mltrain_assets.core.partitions import daily_partitions
from mltrain_assets.core.steps import DATA_PLANE_RETRY, build_versions, check_results, gate_specs, plan_version
from mltrain_assets.landing import day_status, success_uri
from mltrain_assets.resources.compute import ComputeBackend
from mltrain_assets.resources.storage import ArtifactStorage
from mltrain_assets.schemas import DatasetSpec
from mltrain_assets.workloads.ingest.params import INGEST_CODE_VERSION, IngestParams

INGEST_TIMEOUT_S = 1800


def landing_fingerprint(status: dict) -> str:
    """What the landed day is: its marker and every part file with its size."""
    payload = json.dumps({"marker": status["marker_sha256"], "files": status["files"]}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def landing_ingestion_asset(
    *, name: str, spec: DatasetSpec, group_name: str, description: str, freshness_policy: FreshnessPolicy | None = None
):
    """A daily asset that validates, deduplicates and versions one landing dataset.

    A single run may cover a range of dates (single-run backfills): one workload
    ingests every date whose version is not yet committed.
    """
    dataset = spec.name
    gates = [landed_complete(spec.min_rows_per_day), MATCHES_CONTRACT]

    @asset(
        name=name,
        partitions_def=daily_partitions,
        backfill_policy=BackfillPolicy.single_run(),
        code_version=INGEST_CODE_VERSION,
        group_name=group_name,
        description=description,
        kinds={"python", "parquet"},
        retry_policy=DATA_PLANE_RETRY,
        check_specs=gate_specs(name, gates),
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

        params = IngestParams(dataset=dataset, landing_uri=storage.landing_uri)
        planned = [
            plan_version(
                context, storage, date, {"landing": landing_fingerprint(statuses[date])}, params.versioned_fields()
            )
            for date in dates
        ]
        to_build = sum(p.manifest is None for p in planned)
        if to_build:
            context.log.info(f"ingesting {to_build} of {len(dates)} date(s); the rest are already committed")
        refs, outcomes, built = build_versions(
            context,
            storage=storage,
            compute=compute,
            planned=planned,
            params_for=lambda targets: IngestParams(dataset=dataset, landing_uri=storage.landing_uri, targets=targets),
            timeout_s=INGEST_TIMEOUT_S,
            gates=gates,
        )
        metadata = {
            "dates": len(dates),
            "dates_ingested_now": built,
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
        yield from check_results(outcomes)

    return _ingest
