"""DuckDB as the workloads use it: bounded memory with spill to a scratch folder, any store through fsspec.

DuckDB's ``httpfs`` extension cannot be downloaded in every environment, so non-local URIs are
read through an fsspec filesystem registered with the connection (``s3://`` with
``AWS_ENDPOINT_URL`` for S3-compatible stores), and local ones as plain paths.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import duckdb

from mltrain_assets.artifacts import filesystem

# What one DuckDB connection may hold in memory before it spills to its scratch folder.
DEFAULT_MEMORY_LIMIT = "2GB"


@contextmanager
def duckdb_connection(memory_limit: str = DEFAULT_MEMORY_LIMIT, threads: int | None = None) -> Iterator:
    """An in-memory DuckDB connection in UTC that spills past ``memory_limit`` to a scratch folder."""
    with tempfile.TemporaryDirectory(prefix="mltrain-duckdb-") as scratch:
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.execute("SET enable_progress_bar = false")  # a workload's stderr is a log, not a terminal
            con.execute(f"SET memory_limit = '{memory_limit}'")
            con.execute(f"SET temp_directory = '{scratch}'")
            if threads:
                con.execute(f"SET threads = {int(threads)}")
            yield con
        finally:
            con.close()


def reads_in_place(uri: str) -> bool:
    """Whether DuckDB reads ``uri`` from local disk (a re-read costs no request), as ``duckdb_path`` maps it."""
    return uri.startswith("file://")


def duckdb_path(con, uri: str) -> str:
    """The path DuckDB reads ``uri`` by on ``con``: a local path, or the URI on a registered fsspec filesystem."""
    if reads_in_place(uri):
        return uri[len("file://") :]
    fs, _ = filesystem(uri)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if not con.filesystem_is_registered(protocol):
        con.register_filesystem(fs)
    return uri.replace("s3a://", "s3://", 1)


def sql_list(paths: Sequence[str]) -> str:
    """``['a', 'b']`` as a SQL list literal (for ``read_parquet``)."""
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
