"""Verified reads: every file is checked against its manifest (size, SHA-256, rows); a failing version is quarantined."""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mltrain_assets.artifacts.manifest import require_manifest
from mltrain_assets.artifacts.quarantine import quarantine
from mltrain_assets.artifacts.storage import filesystem
from mltrain_assets.artifacts.uris import join_uri

VERIFY_CHUNK = 1 << 20


class ArtifactCorrupt(RuntimeError):
    """A committed file differs from what its manifest recorded; the version was quarantined."""


def _entry(manifest: Mapping[str, Any], uri: str, name: str) -> dict[str, Any]:
    if name not in manifest["files"]:
        raise FileNotFoundError(f"{name} is not listed in the manifest of {uri}")
    return manifest["files"][name]


def _refuse(uri: str, name: str, problem: str) -> None:
    where = quarantine(uri, f"{name}: {problem}")
    raise ArtifactCorrupt(
        f"{uri}: {name} {problem}; the version was quarantined to {where}, so the next "
        "materialization of its asset partition rebuilds it"
    )


def _check_bytes(uri: str, name: str, entry: Mapping[str, Any], size: int, sha256: str | None) -> None:
    if "bytes" in entry and size != entry["bytes"]:
        _refuse(uri, name, f"has {size:,} bytes, its manifest recorded {entry['bytes']:,}")
    if sha256 is not None and "sha256" in entry and sha256 != entry["sha256"]:
        _refuse(uri, name, f"has SHA-256 {sha256[:16]}…, its manifest recorded {entry['sha256'][:16]}…")


def _check_rows(uri: str, name: str, entry: Mapping[str, Any], rows: int) -> None:
    if "rows" in entry and rows != entry["rows"]:
        _refuse(uri, name, f"has {rows:,} rows, its manifest recorded {entry['rows']:,}")


def verified_file_uri(uri: str, name: str, manifest: Mapping[str, Any] | None = None) -> str:
    """The URI of ``name`` in a committed version, after checking its size and SHA-256 against the manifest.

    For readers that hand the file to an engine (DuckDB, Spark) rather than reading it here; the
    bytes are streamed through the hash (about 1.6 GB/s), never held.
    """
    manifest = manifest or require_manifest(uri)
    entry = _entry(manifest, uri, name)
    fs, path = filesystem(uri)
    digest, size = hashlib.sha256(), 0
    try:
        with fs.open(posixpath.join(path, name), "rb") as handle:
            while chunk := handle.read(VERIFY_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        _refuse(uri, name, "is missing")
    _check_bytes(uri, name, entry, size, digest.hexdigest())
    return join_uri(uri, name)


def _verified_bytes(uri: str, name: str) -> tuple[bytes, dict[str, Any]]:
    entry = _entry(require_manifest(uri), uri, name)
    fs, path = filesystem(uri)
    try:
        data = fs.cat_file(posixpath.join(path, name))
    except FileNotFoundError:
        _refuse(uri, name, "is missing")
    _check_bytes(uri, name, entry, len(data), hashlib.sha256(data).hexdigest())
    return data, entry


def read_table(uri: str, name: str, columns: Iterable[str] | None = None) -> pa.Table:
    """Read one parquet file of a committed version, checked against its manifest (size, SHA-256, rows)."""
    data, entry = _verified_bytes(uri, name)
    table = pq.read_table(pa.BufferReader(arrow_buffer(data)), columns=list(columns) if columns else None)
    _check_rows(uri, name, entry, table.num_rows)
    return table


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
    """One file of a committed version, checked against its manifest (size, SHA-256)."""
    return _verified_bytes(uri, name)[0]


def read_json(uri: str, name: str) -> Any:
    return json.loads(read_bytes(uri, name))
