"""The storage contract shared by the control plane and the workloads.

Versioned layout: ``{base}/{asset_key}/{partition_path}/v={version}/...`` with
``_MANIFEST.json`` written last. A version folder without a manifest does not
exist for readers. Readers check every file against its manifest (size, SHA-256,
rows); a version that fails is moved to ``{partition_path}/_quarantine/`` so it is
rebuilt, not reused. This module imports no ``dagster``: workloads use it too.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import dataclasses
import hashlib
import json
import os
import posixpath
import socket
import threading
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
CLAIM_NAME = "_CLAIM.json"
CLAIM_HEARTBEAT_S = 15.0
CLAIM_STALE_S = 120.0  # a claim not refreshed for this long belongs to a writer that died elsewhere
CLAIM_POLL_S = 2.0
CLAIM_WAIT_S = 4 * 3600.0  # the longest a second writer waits for the first to commit
QUARANTINE_FOLDER = "_quarantine"
QUARANTINE_REASON = "_QUARANTINED.json"
VERIFY_CHUNK = 1 << 20
# The workload writing in this process (module, params), recorded in the manifests it commits.
_WORKLOAD: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("mltrain_workload", default=None)


class ArtifactNotCommitted(FileNotFoundError):
    """A reader asked for a version whose manifest has not been written."""


# Every object-store call has a bounded wait: botocore's own retries (3 attempts, standard mode),
# a connect and a read timeout, and no second retry loop in s3fs. A dead endpoint fails in seconds,
# one that accepts and never answers in about a minute (README "Failure modes").
S3_ATTEMPTS = 3
S3_CONNECT_TIMEOUT_S = 5
S3_READ_TIMEOUT_S = 20


class StorageUnavailable(OSError):
    """The object store did not answer within its bounded retries; the message names the endpoint and the call."""


def s3_endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""


def storage_options_for(uri: str) -> dict[str, Any]:
    """fsspec options for ``uri``: bounded waits; S3-compatible endpoints come from ``AWS_ENDPOINT_URL``."""
    if uri.startswith(("s3://", "s3a://")):
        options: dict[str, Any] = {
            "config_kwargs": {
                "connect_timeout": S3_CONNECT_TIMEOUT_S,
                "read_timeout": S3_READ_TIMEOUT_S,
                "retries": {"max_attempts": S3_ATTEMPTS, "mode": "standard"},  # a fresh dict: botocore edits it
            }
        }
        if s3_endpoint():
            options["client_kwargs"] = {"endpoint_url": s3_endpoint()}
        return options
    return {}


def _unreachable(uri: str, what: str, error: Exception) -> StorageUnavailable:
    endpoint = s3_endpoint() or "AWS S3"
    return StorageUnavailable(
        f"object store {endpoint} unreachable after {S3_ATTEMPTS} attempts ({what} {uri}): {error}"
    )


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and the protocol-less path for ``uri`` (``file://`` and ``s3://``)."""
    if uri.startswith("s3a://"):
        uri = "s3://" + uri[len("s3a://") :]
    fs, path = fsspec.core.url_to_fs(uri, **storage_options_for(uri))
    if hasattr(fs, "retries"):
        fs.retries = 1  # s3fs would repeat botocore's 3 attempts 5 times over: one budget, botocore's
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

    def relative_to(self, root: str) -> ArtifactRef:
        """The reference as stored: a version under ``root`` by its path below it (so a moved store still resolves)."""
        prefix = root.rstrip("/") + "/"
        if not self.uri.startswith(prefix):
            return self
        return dataclasses.replace(self, uri=self.uri[len(prefix) :])

    def resolved(self, root: str) -> ArtifactRef:
        """The reference as used: a stored relative path made absolute under today's ``root``."""
        if "://" in self.uri or ":" in self.uri.split("/", 1)[0]:
            return self  # absolute (file://, s3://) or not a storage path (models:/...)
        return dataclasses.replace(self, uri=join_uri(root, self.uri))


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


class AlreadyCommitted(FileExistsError):
    """The version was committed by another writer (a concurrent run); ``manifest`` is its commit, to adopt."""

    def __init__(self, uri: str, manifest: dict[str, Any]):
        super().__init__(f"{uri} is already committed; versions are immutable")
        self.uri = uri
        self.manifest = manifest


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol or ())
    return bool({"file", "local"} & set(protocols))


def _create_exclusive(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Write ``path`` whole, only if it does not exist (atomically); ``False`` if it did."""
    if _is_local(fs):
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
        try:
            os.link(tmp, path)  # atomic and never replaces: a reader sees the whole file or none
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True
    try:
        fs.pipe_file(path, data, mode="create")  # S3: a conditional PUT (If-None-Match: *)
    except FileExistsError:
        return False
    except OSError as error:
        if "PreconditionFailed" in str(error) or "412" in str(error):
            return False
        raise
    return True


class _Claim:
    """The exclusive right to write one version folder, kept fresh by a heartbeat until released."""

    def __init__(self, fs, path: str, owner: dict[str, Any]):
        self.fs, self.path, self.owner = fs, path, owner
        self.file = posixpath.join(path, CLAIM_NAME)
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="mltrain-claim", daemon=True)
        self._beat.start()
        atexit.register(self.release)  # a workload that fails after claiming frees the version at once

    @classmethod
    def acquire(cls, fs, path: str, uri: str, wait_s: float) -> _Claim:
        owner = {"id": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}
        fs.makedirs(path, exist_ok=True)
        deadline = time.monotonic() + wait_s
        while True:
            if _create_exclusive(fs, posixpath.join(path, CLAIM_NAME), _claim_body(owner)):
                committed = read_manifest(uri)
                if committed is None:
                    return cls(fs, path, owner)
                fs.rm(posixpath.join(path, CLAIM_NAME))  # the previous holder committed as it let go
                raise AlreadyCommitted(uri, committed)
            committed = read_manifest(uri)
            if committed is not None:
                raise AlreadyCommitted(uri, committed)
            holder = _read_claim(fs, posixpath.join(path, CLAIM_NAME))
            if holder is not None and _claim_is_stale(holder):
                with contextlib.suppress(FileNotFoundError):
                    fs.rm(posixpath.join(path, CLAIM_NAME))
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{uri}: another writer ({holder}) has held it for over {wait_s:.0f}s without committing"
                )
            time.sleep(CLAIM_POLL_S)

    def _heartbeat(self) -> None:
        while not self._stop.wait(CLAIM_HEARTBEAT_S):
            with contextlib.suppress(OSError):
                self.fs.pipe_file(self.file, _claim_body(self.owner))

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        holder = _read_claim(self.fs, self.file)
        if holder is not None and holder.get("id") == self.owner["id"]:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self.file)


def _claim_body(owner: dict[str, Any]) -> bytes:
    return json.dumps({**owner, "heartbeat": time.time()}).encode()


def _read_claim(fs, path: str) -> dict[str, Any] | None:
    try:
        return json.loads(fs.cat_file(path))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _claim_is_stale(holder: Mapping[str, Any]) -> bool:
    """The holder is gone: its process died on this host, or it stopped beating (another host)."""
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder.get("pid", 0)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            pass
    return time.time() - float(holder.get("heartbeat", 0)) > CLAIM_STALE_S


def read_manifest(uri: str) -> dict[str, Any] | None:
    """The manifest of a committed version, or ``None`` when it does not (yet) exist."""
    fs, path = filesystem(uri)
    target = posixpath.join(path, MANIFEST_NAME)
    try:
        return json.loads(fs.cat_file(target))
    except FileNotFoundError:
        return None
    except Exception as error:
        if _is_connection_error(error):
            raise _unreachable(uri, "reading the manifest of", error) from error
        raise


def _is_connection_error(error: BaseException) -> bool:
    """botocore's connection and timeout errors, however s3fs wraps them."""
    while error is not None:
        module = type(error).__module__
        if module.startswith(("botocore", "aiobotocore")) and any(
            word in type(error).__name__ for word in ("Connect", "Timeout", "Endpoint")
        ):
            return True
        error = error.__cause__ or error.__context__
    return False


def require_manifest(uri: str) -> dict[str, Any]:
    manifest = read_manifest(uri)
    if manifest is None:
        quarantined = quarantine_reason(uri)
        if quarantined:
            raise ArtifactNotCommitted(
                f"no committed version at {uri}: it was quarantined ({quarantined}); "
                "materialize its asset partition again to rebuild it"
            )
        raise ArtifactNotCommitted(f"no committed version at {uri} (missing {MANIFEST_NAME})")
    return manifest


# ------------------------------------------------------------------ verified reads


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


# ------------------------------------------------------------------ quarantine


def _quarantine_folder(uri: str) -> str:
    parent, leaf = posixpath.split(uri.rstrip("/"))
    return join_uri(parent, QUARANTINE_FOLDER, leaf)


def quarantine(uri: str, reason: str) -> str:
    """Move a committed version that failed verification aside (kept, with the reason); returns where.

    Its folder becomes free, so the next materialization of the partition rebuilds the version
    instead of reusing it (and failing) forever.
    """
    target = join_uri(_quarantine_folder(uri), time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    fs, path = filesystem(uri)
    _, target_path = filesystem(target)
    with contextlib.suppress(FileNotFoundError):  # another reader may have moved it first
        fs.makedirs(posixpath.dirname(target_path), exist_ok=True)
        fs.mv(path, target_path, recursive=True)
        fs.pipe_file(posixpath.join(target_path, QUARANTINE_REASON), json.dumps({"reason": reason}).encode())
    return target


def quarantine_reason(uri: str) -> str | None:
    """Why the version at ``uri`` was last quarantined, if it was."""
    fs, path = filesystem(_quarantine_folder(uri))
    try:
        moves = sorted(fs.ls(path, detail=False))
    except FileNotFoundError:
        return None
    for move in reversed(moves):
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return json.loads(fs.cat_file(posixpath.join(move, QUARANTINE_REASON)))["reason"]
    return None


# ------------------------------------------------------------------ which workload wrote a version


@contextmanager
def writing_for(module: str, params: Mapping[str, Any]) -> Iterator[None]:
    """Within this block, committed manifests record the workload and params that built them (for rebuilds)."""
    token = _WORKLOAD.set({"module": module, "params": dict(params)})
    try:
        yield
    finally:
        _WORKLOAD.reset(token)
