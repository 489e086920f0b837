"""Parameters of the ingestion workload (``python -m mltrain_assets.workloads.ingest.workload``)."""

from __future__ import annotations

import dataclasses

from mltrain_assets.workloads.common.params import WorkloadParams, input_uri

INGEST_CODE_VERSION = "ingest-1"
EVENTS_FILE = "events.parquet"  # what every ingested version holds; the readers of both pipelines use it
REJECTED_FILE = "rejected.parquet"


@dataclasses.dataclass(frozen=True, kw_only=True)
class IngestParams(WorkloadParams):
    """Validate, deduplicate and commit landed days of one dataset, one version per date."""

    module = "mltrain_assets.workloads.ingest.workload"
    commits = False  # commits one version per entry of targets

    dataset: str
    landing_uri: str = input_uri()
    # {date: version folder to commit}: one launch ingests every date of a range not yet committed.
    targets: dict[str, str] = dataclasses.field(default_factory=dict, metadata={"versioned": False, "role": "output"})
