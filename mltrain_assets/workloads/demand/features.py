"""Build ``city_demand_features[D]``: ~200 features per city-hour from committed ``ride_events`` versions.

``python -m mltrain_assets.workloads.demand.features --params JSON`` (``FeaturesParams``: ``date``,
``rides_uris`` (committed ``ride_events`` versions), ``out_uri``, ``engine``, ``spark``).

The SQL (``feature_sql``) is the same text on both engines; only the input adapter
differs (how an hour index is derived from a timestamp, how the hour grid is generated).

Output ``features.parquet`` sorted by (city, ts): ``city``, ``ts`` (hour start, UTC), ``demand``
(rides requested in that hour; NULL on the 24 scoring rows of ``D+1``), then the features, all
DOUBLE. Labelled rows cover ``D-FRAME_DAYS+1 .. D``; every city of ``contract.CITIES`` gets every
hour, rides or not.

Engines and storage:

- ``spark`` (default): a session from ``common.spark.spark_session`` configured by the params'
  ``SparkSettings`` (master, conf, driver host); it reuses the active session if the process
  already has one (tests), otherwise starts one and stops it at the end. Spark reads ``file://``
  here. ``s3://`` inputs are refused with a message recommending the duckdb engine: this
  environment's Spark has no ``s3a`` connector. On a cluster that has one (hadoop-aws),
  ``SparkSettings(s3a=True)`` reads ``s3://`` inputs as ``s3a://``.
- ``duckdb``: in-process, reads through fsspec (``duckdb.register_filesystem``), so ``file://``
  and ``s3://`` (with ``AWS_ENDPOINT_URL`` for S3-compatible stores) both work.

The result is collected to the driver (a few thousand rows x ~200 columns) and committed with
``ArtifactWriter``: the aggregation over the raw events is what runs distributed.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from mltrain_assets.artifacts import ArtifactWriter, filesystem, join_uri, read_table, require_manifest
from mltrain_assets.schemas import UTC_TS
from mltrain_assets.workloads.common.runtime import Reporter, workload_main
from mltrain_assets.workloads.common.spark import SparkSettings, spark_path, spark_session
from mltrain_assets.workloads.demand.contract import (
    CITIES,
    FEATURES_CODE_VERSION,
    FEATURES_WINDOW,
    FRAME_DAYS,
    input_dates,
)
from mltrain_assets.workloads.demand.feature_sql import FEATURE_NAMES, LABEL, feature_sql
from mltrain_assets.workloads.demand.params import SQL_ENGINES, FeaturesParams
from mltrain_assets.workloads.ingest.params import EVENTS_FILE

PRODUCER = FeaturesParams.module
FEATURES_FILE = "features.parquet"
ENGINES = SQL_ENGINES
HOUR_US = 3_600_000_000
EPOCH = dt.date(1970, 1, 1)
SPARK_APP_NAME = "mltrain-demand-features"


def _day_index(date: str) -> int:
    return (dt.date.fromisoformat(date) - EPOCH).days


def frame_hours(date: str) -> tuple[int, int, int, int]:
    """(grid start, first labelled, last labelled, last scoring) hour indexes for partition ``date``.

    The grid starts on the first day of ``FEATURES_WINDOW`` (the look-back of the first labelled
    day); the labelled rows are its last ``FRAME_DAYS`` days; the scoring rows are ``date + 1``.
    """
    end_day = _day_index(date)
    first_day = end_day - FRAME_DAYS + 1
    return _day_index(FEATURES_WINDOW.first(date)) * 24, first_day * 24, end_day * 24 + 23, end_day * 24 + 47


# ---------------------------------------------------------------- engines


def _run_duckdb(event_uris: list[str], grid: tuple[int, int], sql: str) -> pa.Table:
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        paths = []
        for uri in event_uris:
            if uri.startswith("file://"):
                paths.append(uri[len("file://") :])
            else:
                fs, _ = filesystem(uri)
                if not con.filesystem_is_registered(fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]):
                    con.register_filesystem(fs)
                paths.append(uri.replace("s3a://", "s3://", 1))
        path_list = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
        con.execute(
            "CREATE TEMP VIEW rides AS SELECT city, epoch_us(requested_at) // 3600000000 AS hour_idx, status, "
            f"fare_usd, distance_km, temperature_c, precipitation_mm FROM read_parquet({path_list})"
        )
        cities = ", ".join(f"('{c}')" for c in CITIES)
        con.execute(
            f"CREATE TEMP TABLE hour_grid AS SELECT c.city, r.range AS hour_idx FROM range({grid[0]}, {grid[1] + 1}) r "
            f"CROSS JOIN (VALUES {cities}) c(city)"
        )
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def _run_spark(event_uris: list[str], grid: tuple[int, int], sql: str, settings: SparkSettings) -> pa.Table:
    paths = [spark_path(uri, settings, "the demand features workload") for uri in event_uris]
    spark, owned = spark_session(settings, SPARK_APP_NAME, shuffle_partitions=8)
    try:
        raw = spark.read.parquet(*paths)
        raw.createOrReplaceTempView("rides_raw")
        spark.sql(
            "CREATE OR REPLACE TEMP VIEW rides AS SELECT city, unix_micros(requested_at) div 3600000000 AS hour_idx, "
            "status, fare_usd, distance_km, temperature_c, precipitation_mm FROM rides_raw"
        )
        cities = spark.createDataFrame([(c,) for c in CITIES], "city string")
        spark.range(grid[0], grid[1] + 1).withColumnRenamed("id", "hour_idx").crossJoin(cities).createOrReplaceTempView(
            "hour_grid"
        )
        return spark.sql(sql).toArrow()
    finally:
        for view in ("rides", "rides_raw", "hour_grid"):
            spark.catalog.dropTempView(view)
        if owned:
            spark.stop()


def compute_features(
    event_uris: Sequence[str], date: str, engine: str = "spark", spark: SparkSettings | None = None
) -> pa.Table:
    """The features table for partition ``date`` from ``events.parquet`` file URIs (no commit)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    grid_start, frame_start, label_end, frame_end = frame_hours(date)
    sql = feature_sql(frame_start, label_end, frame_end)
    if engine == "spark":
        table = _run_spark(list(event_uris), (grid_start, frame_end), sql, spark or SparkSettings())
    else:
        table = _run_duckdb(list(event_uris), (grid_start, frame_end), sql)
    ts = pc.multiply(table.column("hour_idx").cast(pa.int64()), HOUR_US).cast(UTC_TS)
    columns = {"city": table.column("city").cast(pa.string()), "ts": ts, LABEL: table.column(LABEL).cast(pa.float64())}
    columns.update({name: table.column(name).cast(pa.float64()) for name in FEATURE_NAMES})
    out = pa.table(columns)
    return out.sort_by([("city", "ascending"), ("ts", "ascending")])


# ---------------------------------------------------------------- the workload


def build_features(
    rides_uris: Sequence[str],
    date: str,
    out_uri: str,
    engine: str = "spark",
    spark: SparkSettings | None = None,
    reporter: Reporter | None = None,
) -> dict:
    """Compute and commit ``features.parquet`` for partition ``date``; returns the summary."""
    dt.date.fromisoformat(date)
    manifests = {uri: require_manifest(uri) for uri in rides_uris}
    for uri, manifest in manifests.items():
        if EVENTS_FILE not in manifest["files"]:
            raise FileNotFoundError(f"{uri} holds no {EVENTS_FILE}; is it a ride_events version?")
    present_dates = {m["summary"].get("date", "") for m in manifests.values()}
    missing = [d for d in input_dates(date) if d not in present_dates]
    if reporter:
        reporter.info(f"features {date}: {len(rides_uris)} ride_events versions, engine {engine}")
        if missing:
            reporter.info(f"features {date}: no ride_events for {missing}: their hours count as zero demand")

    started = time.monotonic()
    table = compute_features([join_uri(uri, EVENTS_FILE) for uri in rides_uris], date, engine, spark)
    seconds = time.monotonic() - started
    labelled = table.num_rows - table.column(LABEL).null_count
    ts = table.column("ts")
    summary = {
        "date": date,
        "rows": table.num_rows,
        "labelled_rows": labelled,
        "scoring_rows": table.column(LABEL).null_count,
        "n_features": len(FEATURE_NAMES),
        "cities": sorted(set(table.column("city").to_pylist())),
        "engine": engine,
        "first_ts": pc.min(ts).as_py().isoformat(),
        "last_ts": pc.max(ts).as_py().isoformat(),
        "n_inputs": len(rides_uris),
        "input_dates_missing": missing,
        "compute_seconds": round(seconds, 2),
    }
    writer = ArtifactWriter(
        out_uri,
        producer=PRODUCER,
        code_version=FEATURES_CODE_VERSION,
        inputs={uri: {"date": m["summary"].get("date"), "rows": m.get("rows")} for uri, m in manifests.items()},
    )
    writer.write_table(FEATURES_FILE, table)
    writer.commit(summary)
    if reporter:
        reporter.info(
            f"features {date}: {table.num_rows} rows x {len(FEATURE_NAMES)} features in {seconds:.1f}s -> {out_uri}"
        )
    return summary


def read_features(features_uri: str, city: str | None = None) -> pa.Table:
    """``features.parquet`` of a committed version, optionally one city's rows."""
    table = read_table(features_uri, FEATURES_FILE)
    if city is not None:
        table = table.filter(pc.equal(table.column("city"), city))
    return table


def run(params: FeaturesParams, reporter: Reporter) -> dict:
    return build_features(params.rides_uris, params.date, params.out_uri, params.engine, params.spark, reporter)


main = workload_main(FeaturesParams, run)

if __name__ == "__main__":
    raise SystemExit(main())
