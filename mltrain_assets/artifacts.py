"""The storage contract shared by the control plane and the workloads.

Versioned layout: ``{base}/{asset_key}/{partition_path}/v={version}/...`` with
``_MANIFEST.json`` written last. A version folder without a manifest does not
exist for readers. This module imports no ``dagster``: workloads use it too.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST_NAME = "_MANIFEST.json"
MANIFEST_FORMAT = 1
VERSION_LENGTH = 12


class ArtifactNotCommitted(FileNotFoundError):
    """A reader asked for a version whose manifest has not been written."""


def storage_options_for(uri: str) -> dict[str, Any]:
    """fsspec options for ``uri``; S3-compatible endpoints come from ``AWS_ENDPOINT_URL``."""
    if uri.startswith(("s3://", "s3a://")):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
    return {}


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and the protocol-less path for ``uri`` (``file://`` and ``s3://``)."""
    if uri.startswith("s3a://"):
        uri = "s3://" + uri[len("s3a://") :]
    fs, path = fsspec.core.url_to_fs(uri, **storage_options_for(uri))
    return fs, path


def join_uri(base: str, *parts: str) -> str:
    """Join URI segments with ``/`` whatever the scheme."""
    out = base.rstrip("/")
    for part in parts:
        out = posixpath.join(out, part.strip("/"))
    return out


def normalize_uri(uri_or_path: str) -> str:
    """A plain local path becomes an absolute ``file://`` URI; URIs pass through."""
    if "://" in uri_or_path:
        return uri_or_path.rstrip("/")
    return "file://" + os.path.abspath(uri_or_path)


def compute_version(code_version: str, inputs: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> str:
    """A short, stable hash of the code version, the inputs' data versions and parameters."""
    payload = json.dumps(
        {"code": code_version, "inputs": inputs, "params": params or {}},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:VERSION_LENGTH]


def version_uri(base_uri: str, asset_key: str, partition_path: str, version: str) -> str:
    """``{base}/{asset_key}/{partition_path}/v={version}``."""
    return join_uri(base_uri, asset_key, partition_path, f"v={version}")


@dataclass(frozen=True)
class ArtifactRef:
    """What steps pass to each other: where a committed version lives, never the data."""

    asset_key: str
    partition_key: str
    version: str
    uri: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ArtifactRef:
        return cls(**json.loads(text))

    def file_uri(self, name: str) -> str:
        return join_uri(self.uri, name)


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

    Opening a writer on a folder that holds a partial, uncommitted attempt clears
    it first, so a retry never mixes files from two attempts.
    """

    def __init__(self, uri: str, *, producer: str, code_version: str, inputs: Mapping[str, Any] | None = None):
        self.uri = uri.rstrip("/")
        self.fs, self.path = filesystem(self.uri)
        self.producer = producer
        self.code_version = code_version
        self.inputs = dict(inputs or {})
        self.files: dict[str, dict[str, Any]] = {}
        if self.fs.exists(posixpath.join(self.path, MANIFEST_NAME)):
            raise FileExistsError(f"{self.uri} is already committed; versions are immutable")
        if self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)
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
        """Write the manifest last; from now on readers see this version."""
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
        body = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        final = posixpath.join(self.path, MANIFEST_NAME)
        if self.fs.protocol in ("file", "local") or "file" in (self.fs.protocol or ()):
            # Local rename is atomic: a reader sees the whole manifest or none.
            tmp = posixpath.join(self.path, f".{MANIFEST_NAME}.{uuid.uuid4().hex}")
            self.fs.pipe_file(tmp, body)
            self.fs.mv(tmp, final)
        else:
            self.fs.pipe_file(final, body)  # an S3 PUT is atomic
        return manifest


def read_manifest(uri: str) -> dict[str, Any] | None:
    """The manifest of a committed version, or ``None`` when it does not (yet) exist."""
    fs, path = filesystem(uri)
    target = posixpath.join(path, MANIFEST_NAME)
    try:
        return json.loads(fs.cat_file(target))
    except FileNotFoundError:
        return None


def require_manifest(uri: str) -> dict[str, Any]:
    manifest = read_manifest(uri)
    if manifest is None:
        raise ArtifactNotCommitted(f"no committed version at {uri} (missing {MANIFEST_NAME})")
    return manifest


def read_table(uri: str, name: str, columns: Iterable[str] | None = None) -> pa.Table:
    """Read one parquet file of a committed version; uncommitted versions are refused."""
    manifest = require_manifest(uri)
    if name not in manifest["files"]:
        raise FileNotFoundError(f"{name} is not listed in the manifest of {uri}")
    fs, path = filesystem(uri)
    data = arrow_buffer(fs.cat_file(posixpath.join(path, name)))
    return pq.read_table(pa.BufferReader(data), columns=list(columns) if columns else None)


def arrow_buffer(data: bytes) -> pa.Buffer:
    """Copy bytes into Arrow-owned memory.

    Arrow's threaded parquet decoding can drop the last reference to a Python source object
    (a file handle, ``bytes``) in a pool thread; near interpreter exit that aborts the process
    ("terminate called without an active exception"). An Arrow-owned buffer involves none.
    """
    sink = pa.BufferOutputStream()
    sink.write(data)
    return sink.getvalue()


def read_bytes(uri: str, name: str) -> bytes:
    manifest = require_manifest(uri)
    if name not in manifest["files"]:
        raise FileNotFoundError(f"{name} is not listed in the manifest of {uri}")
    fs, path = filesystem(uri)
    return fs.cat_file(posixpath.join(path, name))


def read_json(uri: str, name: str) -> Any:
    return json.loads(read_bytes(uri, name))
