"""Parameters of the ingestion workload (``python -m mltrain_assets.workloads.ingest.workload``)."""

from __future__ import annotations

import dataclasses

from mltrain_assets.workloads.common.params import WorkloadParams, input_uri, runtime, workload

EVENTS_FILE = "events.parquet"  # what every ingested version holds; the readers of both pipelines use it
REJECTED_FILE = "rejected.parquet"


@workload(".workload", kinds={"python", "parquet"})
@dataclasses.dataclass(frozen=True, kw_only=True)
class IngestParams(WorkloadParams):
    """Validate, deduplicate and commit landed days of one dataset, one version per date."""

    commits = False  # commits one version per entry of targets

    dataset: str
    landing_uri: str = input_uri()
    # {date: version folder to commit}: one launch ingests every date of a range not yet committed.
    targets: dict[str, str] = dataclasses.field(default_factory=dict, metadata={"versioned": False, "role": "output"})
    # {date: content fingerprint (core.ingestion.landing_fingerprint) the version was planned from}:
    # recorded in the committed summary as `landing_fingerprint` (what landed content the version holds).
    fingerprints: dict[str, str] = input_uri(default_factory=dict)
    # {date: listing fingerprint (landing.day_status) when the control plane fingerprinted the day}: a
    # day whose listing moved since (a producer still writing) is not ingested under that version. A
    # guard of this launch only (a rebuild from the manifest lists the landing anew): not recorded.
    listings: dict[str, str] = runtime(default_factory=dict)
