"""``ArtifactWriter``: writes one version, data files first and the manifest last, recording which workload built it."""

from __future__ import annotations

import contextvars
import hashlib
import json
import posixpath
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mltrain_assets.artifacts.claims import CLAIM_NAME, CLAIM_WAIT_S, _Claim
from mltrain_assets.artifacts.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    AlreadyCommitted,
    read_manifest,
    require_manifest,
)
from mltrain_assets.artifacts.storage import _create_exclusive, filesystem

# The workload writing in this process (module, params), recorded in the manifests it commits.
_WORKLOAD: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("mltrain_workload", default=None)


class _HashingFile:
    """A write-only file wrapper that hashes and counts what passes through it."""

    def __init__(self, raw):
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data) -> int:
        data = bytes(data)
        self.sha256.update(data)
        self.size += len(data)
        return self._raw.write(data)

    def flush(self) -> None:
        self._raw.flush()

    def tell(self) -> int:
        return self.size

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
            self.closed = True


class ParquetSink:
    """What ``ArtifactWriter.parquet_file`` yields: write tables one after another; rows are counted."""

    def __init__(self, writer: pq.ParquetWriter):
        self._writer = writer
        self.rows = 0

    def write(self, table: pa.Table, row_group_size: int | None = None) -> None:
        self._writer.write_table(table, row_group_size=row_group_size)
        self.rows += table.num_rows


def _schema_description(schema: pa.Schema) -> list[dict[str, str]]:
    return [{"name": f.name, "type": str(f.type)} for f in schema]


class ArtifactWriter:
    """Writes one version: data files first, the manifest last (the commit).

    One writer per version at a time: opening a writer claims the version folder (``_CLAIM.json``,
    created exclusively; kept fresh by a heartbeat). A second writer of the same version — two
    runs materializing one partition at once — waits for the first to commit and then adopts its
    commit (``AlreadyCommitted`` carries the manifest) instead of overwriting it; a claim whose
    owner died (its process is gone on this host, or its heartbeat is older than
    ``CLAIM_STALE_S``) is broken. Once claimed, a partial, uncommitted attempt is cleared, so a
    retry never mixes files from two attempts. The manifest itself is written exclusively too.
    """

    def __init__(
        self,
        uri: str,
        *,
        producer: str,
        code_version: str,
        inputs: Mapping[str, Any] | None = None,
        wait_s: float = CLAIM_WAIT_S,
    ):
        self.uri = uri.rstrip("/")
        self.fs, self.path = filesystem(self.uri)
        self.producer = producer
        self.code_version = code_version
        self.inputs = dict(inputs or {})
        self.files: dict[str, dict[str, Any]] = {}
        committed = read_manifest(self.uri)
        if committed is not None:
            raise AlreadyCommitted(self.uri, committed)
        self._claim = _Claim.acquire(self.fs, self.path, self.uri, wait_s)
        for entry in self.fs.ls(self.path, detail=False) if self.fs.exists(self.path) else []:
            if posixpath.basename(entry.rstrip("/")) not in (CLAIM_NAME, MANIFEST_NAME):  # never a commit
                self.fs.rm(entry, recursive=True)
        self.fs.makedirs(self.path, exist_ok=True)

    def _open(self, name: str) -> _HashingFile:
        target = posixpath.join(self.path, name)
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        return _HashingFile(self.fs.open(target, "wb"))

    def write_table(self, name: str, table: pa.Table, **parquet_kwargs) -> dict[str, Any]:
        """Write ``table`` as parquet under ``name``; returns its manifest entry."""
        sink = self._open(name)
        try:
            pq.write_table(table, sink, compression=parquet_kwargs.pop("compression", "zstd"), **parquet_kwargs)
        finally:
            sink.close()
        entry = {
            "rows": table.num_rows,
            "bytes": sink.size,
            "sha256": sink.sha256.hexdigest(),
            "schema": _schema_description(table.schema),
        }
        self.files[name] = entry
        return entry

    @contextmanager
    def parquet_file(self, name: str, schema: pa.Schema, **parquet_kwargs) -> Iterator[ParquetSink]:
        """Stream a parquet file of ``schema`` into ``name`` table by table (bounded memory); listed on exit."""
        sink = self._open(name)
        writer = pq.ParquetWriter(sink, schema, compression=parquet_kwargs.pop("compression", "zstd"), **parquet_kwargs)
        parquet = ParquetSink(writer)
        try:
            yield parquet
        finally:
            writer.close()
            sink.close()
        self.files[name] = {
            "rows": parquet.rows,
            "bytes": sink.size,
            "sha256": sink.sha256.hexdigest(),
            "schema": _schema_description(schema),
        }

    def write_bytes(self, name: str, data: bytes) -> dict[str, Any]:
        sink = self._open(name)
        try:
            sink.write(data)
        finally:
            sink.close()
        entry = {"bytes": sink.size, "sha256": sink.sha256.hexdigest()}
        self.files[name] = entry
        return entry

    def write_json(self, name: str, obj: Any) -> dict[str, Any]:
        return self.write_bytes(name, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def add_local_file(self, name: str, local_path: str) -> dict[str, Any]:
        with open(local_path, "rb") as handle:
            return self.write_bytes(name, handle.read())

    def commit(self, summary: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write the manifest last; from now on readers see this version.

        Raises ``AlreadyCommitted`` (with the winner's manifest) if another writer committed first.
        """
        manifest = {
            "format": MANIFEST_FORMAT,
            "uri": self.uri,
            "producer": self.producer,
            "code_version": self.code_version,
            "inputs": self.inputs,
            "files": self.files,
            "rows": sum(f.get("rows", 0) for f in self.files.values()),
            "summary": dict(summary or {}),
            "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if _WORKLOAD.get() is not None:
            manifest["workload"] = _WORKLOAD.get()  # what rebuilds it: module and params (`mltrain reproduce`)
        body = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        try:
            if not _create_exclusive(self.fs, posixpath.join(self.path, MANIFEST_NAME), body):
                raise AlreadyCommitted(self.uri, require_manifest(self.uri))
        finally:
            self._claim.release()
        return manifest


@contextmanager
def writing_for(module: str, params: Mapping[str, Any]) -> Iterator[None]:
    """Within this block, committed manifests record the workload and params that built them (for rebuilds)."""
    token = _WORKLOAD.set({"module": module, "params": dict(params)})
    try:
        yield
    finally:
        _WORKLOAD.reset(token)
