"""Build ``city_hour_aggregates[D]``: one day of ride events reduced to city-hour aggregates, once.

``python -m mltrain_assets.pipelines.demand.workloads.aggregates --params JSON`` (``AggregatesParams``:
``rides_uris`` ``{date: committed ride_events version}``, ``targets`` ``{date: out uri}``, ``engine``,
``parity``, ``spark``).

The SQL is ``feature_sql.HOURLY_SQL``, the same text on Spark and DuckDB. Each raw day is read
once, here; every features partition whose window holds the day reads its few hundred rows
instead of re-aggregating millions of events. One launch covers a range of dates (one engine
session), committing one version per date; a date already committed is skipped.

Output ``aggregates.parquet`` sorted by (city, hour_idx): ``city``, ``hour_idx`` (hours since
1970-01-01 UTC), ``ts`` (hour start, UTC), ``rides``, ``cancelled``, ``completed`` (int64),
``fare_sum``, ``distance_sum``, ``temperature``, ``precipitation`` (double). Only city-hours with
rides have a row (features fill the gaps with zero demand).

Engine parity (``parity``, on by default): ``PARITY_CITIES`` of the day's cities x ``PARITY_HOURS``
hours of the day, chosen from the date, are recomputed from the raw events on the other engine (reading
only those hours' row groups; one query for each batch of ``BATCH_DATES`` dates) and compared cell by
cell; the summary's ``engine_parity`` holds the comparison, and the control plane's blocking gate fails
on any difference (``parity``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from mltrain_assets.artifacts import (
    AlreadyCommitted,
    ArtifactWriter,
    read_manifest,
    read_table,
    require_manifest,
    verified_file_uri,
)
from mltrain_assets.pipelines.demand.contract import CITIES
from mltrain_assets.pipelines.demand.params import AggregatesParams
from mltrain_assets.pipelines.demand.workloads import parity
from mltrain_assets.pipelines.demand.workloads.feature_sql import HOURLY_KEY, HOURLY_SQL, HOURLY_VALUES
from mltrain_assets.pipelines.demand.workloads.sql_engines import SqlSession, other_engine, spark_used, sql_session
from mltrain_assets.schemas import UTC_TS
from mltrain_assets.workloads.common.runtime import DataRejected, Reporter, workload_main
from mltrain_assets.workloads.ingest.params import EVENTS_FILE

PRODUCER = AggregatesParams.module
AGGREGATES_FILE = "aggregates.parquet"
HOUR_US = 3_600_000_000
PARITY_CITIES = 3
PARITY_HOURS = 4
# Dates aggregated, checked on the other engine (one query) and committed together.
BATCH_DATES = 8
AGGREGATES_SCHEMA = pa.schema(
    [
        pa.field("city", pa.string(), nullable=False),
        pa.field("hour_idx", pa.int64(), nullable=False),
        pa.field("ts", UTC_TS, nullable=False),
        pa.field("rides", pa.int64(), nullable=False),
        pa.field("cancelled", pa.int64(), nullable=False),
        pa.field("completed", pa.int64(), nullable=False),
        pa.field("fare_sum", pa.float64(), nullable=False),
        pa.field("distance_sum", pa.float64(), nullable=False),
        pa.field("temperature", pa.float64()),
        pa.field("precipitation", pa.float64()),
    ]
)


def day_hours(date: str) -> list[int]:
    """The hour indexes (hours since 1970-01-01 UTC) of the 24 UTC hours of ``date``."""
    first = (dt.date.fromisoformat(date) - dt.date(1970, 1, 1)).days * 24
    return list(range(first, first + 24))


def _normalized(table: pa.Table) -> pa.Table:
    """The engine's result in ``AGGREGATES_SCHEMA`` (DuckDB sums integers as HUGEINT, Spark as BIGINT)."""
    hour_idx = table.column("hour_idx").cast(pa.int64())
    columns = {
        "city": table.column("city").cast(pa.string()),
        "hour_idx": hour_idx,
        "ts": pc.multiply(hour_idx, HOUR_US).cast(UTC_TS),
    }
    columns.update({name: table.column(name).cast(AGGREGATES_SCHEMA.field(name).type) for name in HOURLY_VALUES})
    return pa.table(columns, schema=AGGREGATES_SCHEMA).sort_by([("city", "ascending"), ("hour_idx", "ascending")])


def compute_aggregates(session: SqlSession, events_uris: Sequence[str], hours: list[int] | None = None) -> pa.Table:
    """``HOURLY_SQL`` over ``events.parquet`` files (optionally only some UTC hours), as ``AGGREGATES_SCHEMA``."""
    session.rides(list(events_uris), hours)
    return _normalized(session.query(HOURLY_SQL))


def parity_sample(date: str, cities: Sequence[str] = CITIES) -> tuple[list[str], list[int]]:
    """The cities (of those present) and hours of ``date`` the other engine recomputes: fixed by the date."""
    return (
        parity.sample(sorted(cities), PARITY_CITIES, salt=f"aggregates|{date}"),
        parity.sample(day_hours(date), PARITY_HOURS, salt=f"aggregates|{date}"),
    )


@dataclass(frozen=True)
class AggregatedDay:
    """One date aggregated on the primary engine, not yet committed."""

    date: str
    rides_uri: str
    events_uri: str
    manifest: dict
    table: pa.Table
    seconds: float


def _in_sample(table: pa.Table, cities: list[str], hours: list[int]) -> pa.Table:
    return table.filter(
        pc.and_(pc.is_in(table.column("city"), pa.array(cities)), pc.is_in(table.column("hour_idx"), pa.array(hours)))
    )


def check_parity(days: Mapping[str, AggregatedDay], check: SqlSession, engine: str) -> dict[str, dict]:
    """Each day's sampled city-hours recomputed on ``check`` (the other engine) and compared, by date.

    One query for all the days: an hour index names its date, so each day's rows are picked out of one
    result. A Spark query has a fixed cost whatever its size: one per date made a 35-day range ~4x slower
    (``bench/parity_batches.py``).
    """
    samples = {
        date: parity_sample(date, sorted(set(day.table.column("city").to_pylist()))) for date, day in days.items()
    }
    every_hour = sorted({hour for _, hours in samples.values() for hour in hours})
    recomputed = compute_aggregates(check, [day.events_uri for day in days.values()], every_hour)
    reports = {}
    for date, day in days.items():
        cities, hours = samples[date]
        report = parity.compare(
            _in_sample(day.table, cities, hours),
            _in_sample(recomputed, cities, hours),
            keys=HOURLY_KEY,
            values=HOURLY_VALUES,
            engines=(engine, check.engine),
        )
        reports[date] = {**report, "sample": {"cities": cities, "hours": hours}}
    return reports


def input_manifest(rides_uri: str, date: str) -> dict:
    """The committed ride_events version of ``date`` at ``rides_uri``, or a clear refusal."""
    manifest = require_manifest(rides_uri)
    if EVENTS_FILE not in manifest["files"]:
        raise FileNotFoundError(f"{rides_uri} holds no {EVENTS_FILE}; is it a ride_events version?")
    if manifest["summary"].get("date") != date:
        raise DataRejected(
            f"partition {date}: rule input_date: {rides_uri} holds ride_events of {manifest['summary'].get('date')!r}"
        )
    return manifest


def aggregate_day(session: SqlSession, rides_uri: str, manifest: dict, date: str) -> AggregatedDay:
    """Aggregate one day on the primary engine, refusing city-hours outside it."""
    events_uri = verified_file_uri(rides_uri, EVENTS_FILE, manifest)
    started = time.monotonic()
    table = compute_aggregates(session, [events_uri])
    seconds = time.monotonic() - started
    outside = sorted(set(table.column("hour_idx").to_pylist()) - set(day_hours(date)))
    if outside:
        raise DataRejected(f"partition {date}: rule event_time_in_date: {len(outside)} city-hours outside the day")
    return AggregatedDay(date, rides_uri, events_uri, manifest, table, seconds)


def commit_day(
    day: AggregatedDay, engine: str, engine_parity: dict, out_uri: str, reporter: Reporter | None, spark: dict
) -> dict:
    """Commit one aggregated day with its parity report and the Spark that ran (``spark_used``); returns its summary."""
    table, manifest = day.table, day.manifest
    summary = {
        "date": day.date,
        "rows": table.num_rows,
        "rides": int(pc.sum(table.column("rides")).as_py() or 0),
        "rows_in": int(manifest.get("rows", 0)),
        **spark,
    }
    writer = ArtifactWriter(
        out_uri,
        producer=PRODUCER,
        code_version=AggregatesParams.code_version,
        inputs={day.rides_uri: {"date": day.date, "rows": manifest.get("rows")}},
    )
    said = f"aggregates {day.date}: {summary['rows_in']:,} rides -> {table.num_rows} city-hours in {day.seconds:.1f}s"
    return parity.commit_result(
        writer, AGGREGATES_FILE, table, summary, engine=engine, seconds=day.seconds, engine_parity=engine_parity,
        reporter=reporter, said=said,
    )  # fmt: skip


def build_aggregates(
    rides_uris: Mapping[str, str],
    targets: Mapping[str, str],
    engine: str = "spark",
    spark=None,
    *,
    check_parity_on_other_engine: bool = True,
    reporter: Reporter | None = None,
) -> dict:
    """Aggregate every date of ``targets`` (one session per engine for the whole range); returns the summaries.

    Dates go in batches of ``BATCH_DATES``: each aggregated on the primary engine, checked on the other in
    one query, then committed; a failure loses at most the batch in hand.
    """
    missing = sorted(set(targets) - set(rides_uris))
    if missing:
        raise ValueError(f"no ride_events version given for {missing}")
    summaries = {}
    pending = []
    for date in sorted(targets):
        committed = read_manifest(targets[date])
        if committed is None:
            pending.append(date)
        else:
            summaries[date] = committed["summary"]
            if reporter:
                reporter.info(f"aggregates {date}: already committed at {targets[date]}; skipping")
    # Inputs are checked before any engine starts: a refusal costs no Spark session.
    manifests = {date: input_manifest(rides_uris[date], date) for date in pending}
    used = spark_used(spark, engine, check_parity_on_other_engine)
    if pending:
        with contextlib.ExitStack() as stack:
            session = stack.enter_context(sql_session(engine, spark))
            check = (
                stack.enter_context(sql_session(other_engine(engine), spark)) if check_parity_on_other_engine else None
            )
            for start in range(0, len(pending), BATCH_DATES):
                if reporter and len(pending) > 1:
                    reporter.progress(start, len(pending), "dates aggregated")
                days = {
                    date: aggregate_day(session, rides_uris[date], manifests[date], date)
                    for date in pending[start : start + BATCH_DATES]
                }
                reports = (
                    check_parity(days, check, session.engine)
                    if check is not None
                    else dict.fromkeys(
                        days, parity.not_checked("engine parity is switched off (MLTRAIN_ENGINE_PARITY=false)")
                    )
                )
                for date, day in days.items():
                    try:
                        summaries[date] = commit_day(day, session.engine, reports[date], targets[date], reporter, used)
                    except AlreadyCommitted as adopted:  # a concurrent run committed this date first
                        summaries[date] = adopted.manifest["summary"]
    return {"dates": summaries}


def read_aggregates(uri: str) -> pa.Table:
    """``aggregates.parquet`` of a committed version."""
    return read_table(uri, AGGREGATES_FILE)


def run(params: AggregatesParams, reporter: Reporter) -> dict:
    return build_aggregates(
        rides_uris=params.rides_uris,
        targets=params.targets,
        engine=params.engine,
        spark=params.spark,
        check_parity_on_other_engine=params.parity,
        reporter=reporter,
    )


main = workload_main(AggregatesParams, run)

if __name__ == "__main__":
    raise SystemExit(main())
