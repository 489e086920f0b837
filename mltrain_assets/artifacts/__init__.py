"""The storage contract shared by the control plane and the workloads.

Versioned layout: ``{base}/{asset_key}/{partition_path}/v={version}/...`` with
``_MANIFEST.json`` written last. A version folder without a manifest does not
exist for readers. Readers check every file against its manifest (size, SHA-256,
rows); a version that fails is moved to ``{partition_path}/_quarantine/`` so it is
rebuilt, not reused. This package imports no ``dagster``: workloads use it too.

By concern: ``storage`` (filesystems, bounded waits, exclusive writes), ``uris`` (joins, version
hashes and folders), ``refs`` (``ArtifactRef``), ``manifest`` (the commit and reading it),
``claims`` (one writer per version), ``writer`` (``ArtifactWriter``), ``reads`` (verified reads)
and ``quarantine``. Module constants live in their module: patch them there
(``artifacts.claims.CLAIM_POLL_S``), not here.
"""

from __future__ import annotations

from mltrain_assets.artifacts.claims import CLAIM_HEARTBEAT_S, CLAIM_NAME, CLAIM_POLL_S, CLAIM_STALE_S, CLAIM_WAIT_S
from mltrain_assets.artifacts.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    AlreadyCommitted,
    ArtifactNotCommitted,
    read_manifest,
    require_manifest,
)
from mltrain_assets.artifacts.quarantine import QUARANTINE_FOLDER, QUARANTINE_REASON, quarantine, quarantine_reason
from mltrain_assets.artifacts.reads import (
    VERIFY_CHUNK,
    ArtifactCorrupt,
    arrow_buffer,
    read_bytes,
    read_json,
    read_table,
    verified_file_uri,
)
from mltrain_assets.artifacts.refs import ArtifactRef
from mltrain_assets.artifacts.storage import (
    S3_ATTEMPTS,
    S3_CONNECT_TIMEOUT_S,
    S3_READ_TIMEOUT_S,
    StorageUnavailable,
    filesystem,
    s3_endpoint,
    storage_options_for,
)
from mltrain_assets.artifacts.uris import VERSION_LENGTH, compute_version, join_uri, normalize_uri, version_uri
from mltrain_assets.artifacts.writer import ArtifactWriter, ParquetSink, writing_for

__all__ = [
    "CLAIM_HEARTBEAT_S",
    "CLAIM_NAME",
    "CLAIM_POLL_S",
    "CLAIM_STALE_S",
    "CLAIM_WAIT_S",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "QUARANTINE_FOLDER",
    "QUARANTINE_REASON",
    "S3_ATTEMPTS",
    "S3_CONNECT_TIMEOUT_S",
    "S3_READ_TIMEOUT_S",
    "VERIFY_CHUNK",
    "VERSION_LENGTH",
    "AlreadyCommitted",
    "ArtifactCorrupt",
    "ArtifactNotCommitted",
    "ArtifactRef",
    "ArtifactWriter",
    "ParquetSink",
    "StorageUnavailable",
    "arrow_buffer",
    "compute_version",
    "filesystem",
    "join_uri",
    "normalize_uri",
    "quarantine",
    "quarantine_reason",
    "read_bytes",
    "read_json",
    "read_manifest",
    "read_table",
    "require_manifest",
    "s3_endpoint",
    "storage_options_for",
    "verified_file_uri",
    "version_uri",
    "writing_for",
]
