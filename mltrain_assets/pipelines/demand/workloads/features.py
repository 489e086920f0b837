"""Build ``city_demand_features[D]``: ~200 features per city-hour from committed ``city_hour_aggregates`` versions.

``python -m mltrain_assets.pipelines.demand.workloads.features --params JSON`` (``FeaturesParams``: ``date``,
``aggregates_uris`` (committed ``city_hour_aggregates`` versions of the window), ``out_uri``,
``engine``, ``parity``, ``spark``).

The SQL (``feature_sql``) is the same text on both engines (``sql_engines``). It reads the
window's city-hour aggregates (a few hundred rows per day), never raw events: the raw day was
aggregated once by ``city_hour_aggregates``, so a features partition costs the same at 100k
and at 50M rides a day.

Output ``features.parquet`` sorted by (city, ts): ``city``, ``ts`` (hour start, UTC), ``demand``
(rides requested in that hour; NULL on the 24 scoring rows of ``D+1``), then the features, all
DOUBLE. Labelled rows cover ``D-FRAME_DAYS+1 .. D``; every city of ``contract.CITIES`` gets every
hour, rides or not.

Engine parity (``parity``, on by default): the features are recomputed on the other engine and
compared cell by cell (all of them: every row's windows read the whole window, so a sample would
cost the same); the summary's ``engine_parity`` holds the comparison for the blocking gate.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from mltrain_assets.artifacts import ArtifactWriter, read_table, require_manifest, verified_file_uri
from mltrain_assets.pipelines.demand.contract import FEATURES_WINDOW, FRAME_DAYS, input_dates
from mltrain_assets.pipelines.demand.params import FeaturesParams
from mltrain_assets.pipelines.demand.workloads import parity
from mltrain_assets.pipelines.demand.workloads.aggregates import AGGREGATES_FILE
from mltrain_assets.pipelines.demand.workloads.feature_sql import (
    FEATURE_NAMES,
    HOURLY_SQL,
    KEY_COLUMNS,
    LABEL,
    feature_sql,
)
from mltrain_assets.pipelines.demand.workloads.sql_engines import SqlSession, other_engine, spark_used, sql_session
from mltrain_assets.schemas import UTC_TS
from mltrain_assets.workloads.common.runtime import Reporter, workload_main
from mltrain_assets.workloads.common.spark import SparkSettings

PRODUCER = FeaturesParams.module
FEATURES_FILE = "features.parquet"
HOUR_US = 3_600_000_000
EPOCH = dt.date(1970, 1, 1)


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


def features_on(session: SqlSession, date: str) -> pa.Table:
    """The features table for ``date`` on a session whose ``hourly`` view holds the window's aggregates."""
    grid_start, frame_start, label_end, frame_end = frame_hours(date)
    session.hour_grid(grid_start, frame_end)
    table = session.query(feature_sql(frame_start, label_end, frame_end))
    ts = pc.multiply(table.column("hour_idx").cast(pa.int64()), HOUR_US).cast(UTC_TS)
    columns = {"city": table.column("city").cast(pa.string()), "ts": ts, LABEL: table.column(LABEL).cast(pa.float64())}
    columns.update({name: table.column(name).cast(pa.float64()) for name in FEATURE_NAMES})
    return pa.table(columns).sort_by([("city", "ascending"), ("ts", "ascending")])


def compute_features(
    aggregate_files: Sequence[str], date: str, engine: str = "spark", spark: SparkSettings | None = None
) -> pa.Table:
    """The features table for partition ``date`` from ``aggregates.parquet`` file URIs (no commit)."""
    with sql_session(engine, spark) as session:
        session.parquet_view("hourly", aggregate_files)
        return features_on(session, date)


def features_from_events(
    event_files: Sequence[str], date: str, engine: str = "spark", spark: SparkSettings | None = None
) -> pa.Table:
    """The same features computed in one pass over raw ``events.parquet`` files (no per-day aggregates).

    What the features were before ``city_hour_aggregates`` existed: the reference the incremental
    path is checked against.
    """
    with sql_session(engine, spark) as session:
        session.rides(event_files)
        session.view("hourly", HOURLY_SQL)  # every day's city-hours at once
        return features_on(session, date)


# ---------------------------------------------------------------- the workload


def build_features(
    aggregates_uris: Sequence[str],
    date: str,
    out_uri: str,
    engine: str = "spark",
    spark: SparkSettings | None = None,
    reporter: Reporter | None = None,
    *,
    check_parity_on_other_engine: bool = True,
) -> dict:
    """Compute and commit ``features.parquet`` for partition ``date``; returns the summary."""
    dt.date.fromisoformat(date)
    manifests = {uri: require_manifest(uri) for uri in aggregates_uris}
    for uri, manifest in manifests.items():
        if AGGREGATES_FILE not in manifest["files"]:
            raise FileNotFoundError(f"{uri} holds no {AGGREGATES_FILE}; is it a city_hour_aggregates version?")
    present_dates = {m["summary"].get("date", "") for m in manifests.values()}
    missing = [d for d in input_dates(date) if d not in present_dates]
    if reporter:
        reporter.info(f"features {date}: {len(aggregates_uris)} city_hour_aggregates versions, engine {engine}")
        if missing:
            reporter.info(f"features {date}: no aggregates for {missing}: their hours count as zero demand")

    files = [verified_file_uri(uri, AGGREGATES_FILE, manifests[uri]) for uri in aggregates_uris]
    started = time.monotonic()
    table = compute_features(files, date, engine, spark)
    seconds = time.monotonic() - started
    if check_parity_on_other_engine:
        checked_on = other_engine(engine)
        parity_started = time.monotonic()
        recomputed = compute_features(files, date, checked_on, spark)
        engine_parity = parity.compare(
            table, recomputed, keys=KEY_COLUMNS, values=[LABEL, *FEATURE_NAMES], engines=(engine, checked_on)
        )
        engine_parity["seconds"] = round(time.monotonic() - parity_started, 2)
    else:
        engine_parity = parity.not_checked("engine parity is switched off (MLTRAIN_ENGINE_PARITY=false)")
    labelled = table.num_rows - table.column(LABEL).null_count
    ts = table.column("ts")
    summary = {
        "date": date,
        "rows": table.num_rows,
        "labelled_rows": labelled,
        "scoring_rows": table.column(LABEL).null_count,
        "n_features": len(FEATURE_NAMES),
        "first_ts": pc.min(ts).as_py().isoformat(),
        "last_ts": pc.max(ts).as_py().isoformat(),
        "n_inputs": len(aggregates_uris),
        "input_dates_missing": missing,
        **spark_used(spark, engine, check_parity_on_other_engine),
    }
    writer = ArtifactWriter(
        out_uri,
        producer=PRODUCER,
        code_version=FeaturesParams.code_version,
        inputs={uri: {"date": m["summary"].get("date"), "rows": m.get("rows")} for uri, m in manifests.items()},
    )
    said = f"features {date}: {table.num_rows} rows x {len(FEATURE_NAMES)} features in {seconds:.1f}s -> {out_uri}"
    return parity.commit_result(
        writer, FEATURES_FILE, table, summary, engine=engine, seconds=seconds, engine_parity=engine_parity,
        reporter=reporter, said=said,
    )  # fmt: skip


def read_features(features_uri: str, city: str | None = None) -> pa.Table:
    """``features.parquet`` of a committed version, optionally one city's rows."""
    table = read_table(features_uri, FEATURES_FILE)
    if city is not None:
        table = table.filter(pc.equal(table.column("city"), city))
    return table


def run(params: FeaturesParams, reporter: Reporter) -> dict:
    return build_features(
        params.aggregates_uris,
        params.date,
        params.out_uri,
        params.engine,
        params.spark,
        reporter,
        check_parity_on_other_engine=params.parity,
    )


main = workload_main(FeaturesParams, run)

if __name__ == "__main__":
    raise SystemExit(main())
