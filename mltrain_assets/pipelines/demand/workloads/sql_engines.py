"""The two engines the demand SQL runs on, behind one small interface: Spark SQL and DuckDB.

The SQL text (``feature_sql``) is the same on both; what differs is only how the inputs become
tables: how an hour index is derived from a timestamp, how a time range is written, how the hour
grid is generated. ``sql_session(engine)`` opens one and closes it.

- ``spark``: a session from ``common.spark.spark_session`` configured by ``SparkSettings`` (it
  reuses the active session if the process has one, e.g. tests). Spark reads ``file://`` here;
  ``s3://`` is refused with a message recommending the duckdb engine unless ``SparkSettings.s3a``.
  A ``sc://`` master makes it a Spark Connect client of a long-lived server (``common.spark_connect``):
  the same SQL text, views and results; no JVM in the workload.
- ``duckdb``: in-process, bounded memory with spill (``common.duck``), reads ``file://`` and
  ``s3://`` through fsspec.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import pyarrow as pa

from mltrain_assets.pipelines.demand.contract import CITIES
from mltrain_assets.pipelines.demand.params import SQL_ENGINES
from mltrain_assets.workloads.common.duck import duckdb_connection, duckdb_path, sql_list
from mltrain_assets.workloads.common.spark import SparkSettings, spark_path, spark_session
from mltrain_assets.workloads.common.spark_connect import is_connect_master, server_url

SPARK_APP_NAME = "mltrain-demand-sql"
RIDE_COLUMNS = "status, fare_usd, distance_km, temperature_c, precipitation_mm"
HOUR_S = 3600


class SqlSession(Protocol):
    engine: str

    def rides(self, event_uris: Sequence[str], hours: Sequence[int] | None = None) -> None:
        """Register ``rides`` over ``events.parquet`` files, optionally only the UTC hours (hour indexes) given."""

    def parquet_view(self, name: str, uris: Sequence[str]) -> None:
        """Register ``name`` over parquet files."""

    def view(self, name: str, sql: str) -> None:
        """Register ``name`` as the result of ``sql`` over the views registered so far."""

    def hour_grid(self, first_hour: int, last_hour: int) -> None:
        """Register ``hour_grid``: every city of the contract x every hour index in the range."""

    def query(self, sql: str) -> pa.Table: ...


def _hour_start(hour_idx: int) -> str:
    return dt.datetime.fromtimestamp(hour_idx * HOUR_S, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _hours_filter(hours: Sequence[int] | None, timestamp) -> str:
    """``requested_at`` within any of the hours, as range predicates on the column (so readers prune row groups)."""
    if not hours:
        return ""
    ranges = [f"(requested_at >= {timestamp(h)} AND requested_at < {timestamp(h + 1)})" for h in sorted(set(hours))]
    return " WHERE " + " OR ".join(ranges)


def _duckdb_timestamp(hour_idx: int) -> str:
    return f"TIMESTAMPTZ '{_hour_start(hour_idx)}+00'"


def _spark_timestamp(hour_idx: int) -> str:
    return f"TIMESTAMP '{_hour_start(hour_idx)}'"  # the session's time zone is UTC


class _DuckDBSession:
    engine = "duckdb"

    def __init__(self, con):
        self.con = con

    def rides(self, event_uris: Sequence[str], hours: Sequence[int] | None = None) -> None:
        paths = sql_list([duckdb_path(self.con, uri) for uri in event_uris])
        self.con.execute(
            "CREATE OR REPLACE TEMP VIEW rides AS SELECT city, epoch_us(requested_at) // 3600000000 AS hour_idx, "
            f"{RIDE_COLUMNS} FROM read_parquet({paths}){_hours_filter(hours, _duckdb_timestamp)}"
        )

    def parquet_view(self, name: str, uris: Sequence[str]) -> None:
        paths = sql_list([duckdb_path(self.con, uri) for uri in uris])
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM read_parquet({paths})")

    def view(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")

    def hour_grid(self, first_hour: int, last_hour: int) -> None:
        cities = ", ".join(f"('{c}')" for c in CITIES)
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE hour_grid AS SELECT c.city, r.range AS hour_idx "
            f"FROM range({first_hour}, {last_hour + 1}) r CROSS JOIN (VALUES {cities}) c(city)"
        )

    def query(self, sql: str) -> pa.Table:
        return self.con.sql(sql).to_arrow_table()


class _SparkSession:
    """Starts (or joins) the Spark session on first use: inputs are checked first, so a refusal starts nothing."""

    engine = "spark"

    def __init__(self, settings: SparkSettings):
        self.settings = settings
        self.views: list[str] = []
        self._spark = None
        self._owned = False

    @property
    def spark(self):
        if self._spark is None:
            self._spark, self._owned = spark_session(self.settings, SPARK_APP_NAME, shuffle_partitions=8)
        return self._spark

    def _paths(self, uris: Sequence[str]) -> list[str]:
        return [spark_path(uri, self.settings, "the demand SQL workloads") for uri in uris]

    def _view(self, name: str, frame) -> None:
        frame.createOrReplaceTempView(name)
        self.views.append(name)

    def rides(self, event_uris: Sequence[str], hours: Sequence[int] | None = None) -> None:
        paths = self._paths(event_uris)
        self._view("rides_raw", self.spark.read.parquet(*paths))
        self._view(
            "rides",
            self.spark.sql(
                "SELECT city, unix_micros(requested_at) div 3600000000 AS hour_idx, "
                f"{RIDE_COLUMNS} FROM rides_raw{_hours_filter(hours, _spark_timestamp)}"
            ),
        )

    def parquet_view(self, name: str, uris: Sequence[str]) -> None:
        paths = self._paths(uris)
        self._view(name, self.spark.read.parquet(*paths))

    def view(self, name: str, sql: str) -> None:
        self._view(name, self.spark.sql(sql))

    def hour_grid(self, first_hour: int, last_hour: int) -> None:
        cities = self.spark.createDataFrame([(c,) for c in CITIES], "city string")
        grid = self.spark.range(first_hour, last_hour + 1).withColumnRenamed("id", "hour_idx").crossJoin(cities)
        self._view("hour_grid", grid)

    def query(self, sql: str) -> pa.Table:
        return self.spark.sql(sql).toArrow()

    def close(self) -> None:
        if self._spark is None:
            return
        if self._owned:  # its views go with it (a call per view would wait on a Connect server that went away)
            self._spark.stop()
            return
        for view in self.views:
            self._spark.catalog.dropTempView(view)


@contextmanager
def sql_session(engine: str, spark: SparkSettings | None = None) -> Iterator[SqlSession]:
    """An open session of ``engine`` ("spark" | "duckdb"), closed (or its views dropped) on exit."""
    if engine not in SQL_ENGINES:
        raise ValueError(f"engine must be one of {SQL_ENGINES}, not {engine!r}")
    if engine == "duckdb":
        with duckdb_connection() as con:
            yield _DuckDBSession(con)
        return
    adapter = _SparkSession(spark or SparkSettings())
    try:
        yield adapter
    finally:
        adapter.close()


def spark_used(spark: SparkSettings | None, engine: str, parity: bool) -> dict[str, object]:
    """What a summary records of the Spark that ran (primary or parity engine): its master, and if it was Connect."""
    if engine != "spark" and not parity:
        return {}
    master = (spark or SparkSettings()).master
    connect = is_connect_master(master)
    return {"spark_master": server_url(master) if connect else master, "spark_connect": connect}


def other_engine(engine: str) -> str:
    """The engine a result is checked against (engine parity)."""
    return next(e for e in SQL_ENGINES if e != engine)
