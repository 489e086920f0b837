"""Landing-zone ingestion assets: one factory for every landing dataset of every pipeline."""

import hashlib
import json
import time

from dagster import AssetExecutionContext, AssetsDefinition, Failure, MetadataValue

from mltrain_assets.artifacts import ArtifactRef
from mltrain_assets.core.assets import RangeStep, column_schema, declared_here, workload_asset
from mltrain_assets.core.gates import MATCHES_CONTRACT, landed_complete
from mltrain_assets.landing import bytes_to_hash, content_digests, day_status, success_uri
from mltrain_assets.registry import PipelineSpec
from mltrain_assets.workloads.ingest.params import IngestParams

# Per-partition materialization metadata: the content fingerprint of the landed day that version holds
# (the landing sensor compares a re-delivered day's with it).
LANDING_FINGERPRINT = "landing_fingerprint"


def landing_fingerprint(status: dict) -> str:
    """What the landed day *is*, by content: its marker's content and every file's content digest.

    ``status`` is ``landing.day_status``. On S3 the digests are the objects' ETags from the listing
    (nothing read); on ``file://`` the SHA-256 of each file's bytes, streamed in 1 MiB chunks. A
    corrected re-delivery (same sizes, same ``_SUCCESS``) is a new version; an identical rewrite is
    the same one. Every non-hidden file counts, strays included (they make ingestion reject the day).
    """
    payload = json.dumps({"marker": status["marker_sha256"], "files": content_digests(status)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def partition_metadata(ref: ArtifactRef) -> dict:
    """One ingested day's own figures on its materialization (``build_versions`` adds where and which version)."""
    summary = ref.metadata
    hours = summary.get("hours_present")
    metadata = {
        "partition": ref.partition_key,
        "hours_present": len(hours) if isinstance(hours, list) else int(hours or 0),
        "duplicates_removed": int(summary.get("duplicates_removed", 0)),
        "rows_rejected": int(summary.get("rows_rejected", 0)),
        "rejected_by_rule": MetadataValue.json(summary.get("rejected_by_rule") or {}),
    }
    for key, counts in summary.items():
        if key.startswith("rows_by_") and key != "rows_by_hour" and counts:  # DatasetSpec.count_by
            metadata[key] = MetadataValue.json(counts)
    return metadata


def landing_ingestion_asset(
    spec: PipelineSpec, dataset: str | None = None, *, name: str | None = None, description: str
) -> AssetsDefinition:
    """A daily asset that validates, deduplicates and versions one of the pipeline's landing datasets.

    ``dataset``: which of ``spec.landing_datasets`` (default: its only one); ``name``: the asset's
    (default ``<dataset>_ingested``). A single run may cover a range of dates (single-run backfills):
    one workload ingests every date whose version is not yet committed, and each date's
    materialization carries that date's own rows, hours present, duplicates removed and rejects.
    """
    if dataset is None:
        if len(spec.landing_datasets) != 1:
            raise ValueError(f"pipeline {spec.name}: name the dataset to ingest, one of {spec.dataset_names()}")
        dataset = spec.landing_datasets[0].name
    landing = spec.landing(dataset).dataset
    asset_name = name or f"{dataset}_ingested"
    landed = dataset  # bound for the body below (mypy: a str, not Optional)

    def ingest(context: AssetExecutionContext) -> RangeStep:
        storage = context.resources.storage
        dates = list(context.partition_keys)
        statuses = {date: day_status(storage.landing_uri, landed, date) for date in dates}
        not_landed = [date for date in dates if not statuses[date]["success"]]
        if not_landed:
            details = "; ".join(
                f"{asset_name} {date}: rule landing_complete: no _SUCCESS marker at "
                f"{success_uri(storage.landing_uri, landed, date)} ({len(statuses[date]['hours'])}/24 hourly buckets present)"
                for date in not_landed
            )
            raise Failure(description=details, allow_retries=False)

        started = time.monotonic()
        fingerprints = {date: landing_fingerprint(statuses[date]) for date in dates}
        hashed = sum(bytes_to_hash(statuses[date]) for date in dates)
        if hashed:
            context.log.info(
                f"fingerprinted {len(dates)} landed day(s): {hashed / 1e6:,.1f} MB hashed "
                f"in {time.monotonic() - started:.1f}s"
            )
        # The bytes hashed must be those listed: a producer writing meanwhile makes this attempt retry.
        moved = [
            d for d in dates if day_status(storage.landing_uri, landed, d)["fingerprint"] != statuses[d]["fingerprint"]
        ]
        if moved:
            raise Failure(
                description=f"{asset_name} {', '.join(moved)}: the landed files changed while they were fingerprinted "
                "(a producer is still writing); the step retries",
                allow_retries=True,
            )
        return RangeStep(
            inputs_by_date={date: {"landing": fingerprints[date]} for date in dates},
            versioned=IngestParams(dataset=landed, landing_uri=storage.landing_uri),
            params_for=lambda targets: IngestParams(
                dataset=landed,
                landing_uri=storage.landing_uri,
                targets=targets,
                fingerprints={date: fingerprints[date] for date in targets},
                listings={date: statuses[date]["fingerprint"] for date in targets},
            ),
            built_key="dates_ingested_now",
            metadata=lambda date, ref: {**partition_metadata(ref), LANDING_FINGERPRINT: fingerprints[date]},
            run_metadata=lambda refs: {"rows_in_run": sum(int(r.metadata.get("rows", 0)) for r in refs.values())},
        )

    return workload_asset(
        spec,
        IngestParams,
        layer="landed",
        name=asset_name,
        description=description,
        over_range=True,
        gates=[landed_complete(landing.min_rows_per_day), MATCHES_CONTRACT],
        automation_condition=None,  # the landing sensor starts it, when a day lands
        metadata={
            "landing_dataset": dataset,
            "dagster/column_schema": column_schema(landing.schema),
            **declared_here(),  # the pipeline's line that declares it, not this factory
        },
    )(ingest)
