"""Ingest landed days into committed, validated, deduplicated event tables (both datasets).

``python -m mltrain_assets.workloads.ingest.workload --params JSON`` (``IngestParams``: ``dataset``,
``landing_uri``, ``targets`` ``{"YYYY-MM-DD": "<versioned out uri>", ...}``).

Per date, out of core (DuckDB reads the landed files in place and spills past its memory limit;
the events are written an hour at a time), so a 50M-row day runs in a few GB:

1. list the day's part files (``{landing}/{dataset}/date=D/hour=HH/*.parquet``);
2. check every file's schema (from its footer) against ``registry.landing_dataset(dataset).schema`` (names and types;
   nullability is checked per row) -> ``DataRejected`` naming the date, rule ``schema`` and
   the missing / extra / mistyped columns;
3. label each row with the first rule it breaks: the dataset's ``row_rules`` (DuckDB SQL), then
   ``event_time_in_date`` (the event time lies within the UTC date) and ``required_not_null``;
   more than ``MAX_REJECTED_FRACTION`` of the rows breaking rules rejects the day, otherwise the
   breaking rows are quarantined in ``rejected.parquet`` (with a ``rule`` column);
4. drop duplicate ids (redelivered events), keeping the first by event time (ties broken by every
   other column, so the pick does not depend on file order);
5. write ``events.parquet`` sorted by (event time, id), one UTC hour after another (row groups of
   ``EVENTS_ROW_GROUP`` rows, so readers prune by time), and commit the version.

Completeness (24 hourly buckets, plausible counts, ``min_rows_per_day``) is not refused here: the
summary reports it (``rows_by_hour``, ``hours_present``, ``rows``, ``success_marker``) and the
control plane's blocking gates judge it.

A rejected date commits nothing. With several dates, the others are still ingested, then the
process exits with the data-rejected code listing every rejected date. A date whose output version
is already committed is skipped (its committed summary is returned): retries are idempotent.
"""

from __future__ import annotations

import datetime as dt
import posixpath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mltrain_assets.artifacts import ArtifactWriter, filesystem, join_uri, read_manifest
from mltrain_assets.landing import day_status, day_uri
from mltrain_assets.registry import landing_dataset
from mltrain_assets.schemas import DatasetSpec
from mltrain_assets.workloads.common.duck import DEFAULT_MEMORY_LIMIT, duckdb_connection, duckdb_path, sql_list
from mltrain_assets.workloads.common.runtime import DataRejected, Reporter, workload_main
from mltrain_assets.workloads.ingest.params import EVENTS_FILE, INGEST_CODE_VERSION, REJECTED_FILE, IngestParams

PRODUCER = IngestParams.module
MAX_REJECTED_FRACTION = 0.01
RULE_COLUMN = "rule"
EVENT_TIME_RULE = "event_time_in_date"
NOT_NULL_RULE = "required_not_null"
EVENTS_ROW_GROUP = 1 << 20  # rows per row group of events.parquet: readers prune by event time


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def schema_problems(actual: pa.Schema, expected: pa.Schema) -> list[str]:
    """What differs between a file's schema and the contract: missing, extra and mistyped columns."""
    have = {f.name: f.type for f in actual}
    want = {f.name: f.type for f in expected}
    problems = []
    missing = [name for name in want if name not in have]
    extra = [name for name in have if name not in want]
    mistyped = [
        f"{name}: {have[name]} (expected {want[name]})" for name in want if name in have and have[name] != want[name]
    ]
    if missing:
        problems.append(f"missing columns {missing}")
    if extra:
        problems.append(f"extra columns {extra}")
    if mistyped:
        problems.append(f"mistyped columns [{'; '.join(mistyped)}]")
    return problems


def row_rules(spec: DatasetSpec, date: str) -> dict[str, str]:
    """Every rule a valid row satisfies, in the order a row's first broken rule is reported."""
    start = dt.date.fromisoformat(date)
    end = start + dt.timedelta(days=1)
    time_col = _quote(spec.time_column)
    rules = dict(spec.row_rules)
    rules[EVENT_TIME_RULE] = (
        f"{time_col} >= TIMESTAMPTZ '{start.isoformat()} 00:00:00+00' "
        f"AND {time_col} < TIMESTAMPTZ '{end.isoformat()} 00:00:00+00'"
    )
    rules[NOT_NULL_RULE] = " AND ".join(f"{_quote(f.name)} IS NOT NULL" for f in spec.schema if not f.nullable)
    return rules


def _check_files(landing_uri: str, spec: DatasetSpec, date: str, files: list[str]) -> tuple[list[str], dict[int, int]]:
    """Every part file's schema against the contract, from its footer only; ``(uris, rows per landed hour)``."""
    fs, root = filesystem(day_uri(landing_uri, spec.name, date))
    problems = []
    rows_by_folder_hour: dict[int, int] = {}
    for rel in files:
        with fs.open(posixpath.join(root, rel), "rb") as handle:
            parquet = pq.ParquetFile(handle)
            file_problems = schema_problems(parquet.schema_arrow, spec.schema)
            rows = parquet.metadata.num_rows
        if file_problems:
            problems.append(f"{rel}: {', '.join(file_problems)}")
            continue
        hour = int(rel.split("/")[0].removeprefix("hour="))
        rows_by_folder_hour[hour] = rows_by_folder_hour.get(hour, 0) + rows
    if problems:
        shown = problems[:3] + ([f"... and {len(problems) - 3} more files"] if len(problems) > 3 else [])
        raise DataRejected(f"partition {date}: rule schema: {'; '.join(shown)}")
    return [join_uri(day_uri(landing_uri, spec.name, date), rel) for rel in files], rows_by_folder_hour


def _hour_bounds(spec: DatasetSpec, date: str, hour: int) -> str:
    start = dt.datetime.combine(dt.date.fromisoformat(date), dt.time(hour), dt.UTC)
    end = start + dt.timedelta(hours=1)
    time_col = _quote(spec.time_column)
    return f"{time_col} >= TIMESTAMPTZ '{start.isoformat()}' AND {time_col} < TIMESTAMPTZ '{end.isoformat()}'"


def ingest_day(
    landing_uri: str,
    dataset: str,
    date: str,
    out_uri: str,
    reporter: Reporter | None = None,
    *,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
) -> dict:
    """Validate, quarantine, deduplicate and commit one landed day; returns the committed summary.

    Out of core: DuckDB reads the landed files in place and spills past ``memory_limit``; the
    events are written hour by hour (each hour's rows sorted), so memory holds one hour, not the day.
    """
    spec = landing_dataset(dataset)
    dt.date.fromisoformat(date)
    committed = read_manifest(out_uri)
    if committed is not None:
        if reporter:
            reporter.info(f"{dataset} {date}: already committed at {out_uri}; skipping")
        return committed["summary"]

    status = day_status(landing_uri, dataset, date)
    files = sorted(rel for rel in status["files"] if rel.startswith("hour="))
    if not files:
        raise DataRejected(
            f"partition {date}: rule files_present: no part files under {day_uri(landing_uri, dataset, date)}"
        )
    file_uris, rows_by_folder_hour = _check_files(landing_uri, spec, date, files)

    rules = row_rules(spec, date)
    id_col, time_col = _quote(spec.id_column), _quote(spec.time_column)
    others = [_quote(f.name) for f in spec.schema if f.name not in (spec.id_column, spec.time_column)]
    columns = ", ".join(_quote(name) for name in spec.schema.names)
    first_broken = " ".join(f"WHEN NOT COALESCE(({sql}), FALSE) THEN '{name}'" for name, sql in rules.items())
    tiebreak = ", ".join(f"{c} ASC NULLS LAST" for c in others)
    rows_by_hour = dict.fromkeys(range(24), 0)
    rows_by_city: dict[str, int] = {}
    with duckdb_connection(memory_limit) as con:
        paths = sql_list([duckdb_path(con, uri) for uri in file_uris])
        con.execute(
            f"CREATE TEMP VIEW labelled AS SELECT {columns}, CASE {first_broken} END AS {RULE_COLUMN} "
            f"FROM read_parquet({paths}, union_by_name = true)"
        )
        counts = dict(con.sql(f"SELECT {RULE_COLUMN}, count(*) FROM labelled GROUP BY 1").fetchall())
        rows_landed = sum(int(n) for n in counts.values())
        rejected_by_rule = {name: int(counts.get(name, 0)) for name in rules}
        rows_rejected = sum(rejected_by_rule.values())
        if rows_rejected > MAX_REJECTED_FRACTION * rows_landed:
            worst = max(rejected_by_rule, key=lambda name: rejected_by_rule[name])
            breakdown = ", ".join(f"{name}={n}" for name, n in rejected_by_rule.items() if n)
            raise DataRejected(
                f"partition {date}: rule {worst}: {rejected_by_rule[worst]} rows "
                f"({100.0 * rejected_by_rule[worst] / rows_landed:.1f}%) break it; {rows_rejected} of {rows_landed} "
                f"landed rows ({100.0 * rows_rejected / rows_landed:.1f}%) break row rules, more than the "
                f"{100 * MAX_REJECTED_FRACTION:g}% allowed ({breakdown})"
            )
        if reporter:
            reporter.info(
                f"{dataset} {date}: {rows_landed} rows landed in {len(files)} files, {rows_rejected} break rules"
            )
        writer = ArtifactWriter(
            out_uri,
            producer=PRODUCER,
            code_version=INGEST_CODE_VERSION,
            inputs={
                "landing": day_uri(landing_uri, dataset, date),
                "marker_sha256": status["marker_sha256"],
                "files": status["files"],
            },
        )
        # Duplicate ids, found by an 8-byte hash of the id (cheap to group); a collision only sends a
        # unique id through the exact per-id pick below, which keeps it.
        con.execute(
            f"CREATE TEMP TABLE repeated AS SELECT hash({id_col}) AS id_hash FROM labelled "
            f"WHERE {RULE_COLUMN} IS NULL GROUP BY 1 HAVING count(*) > 1"
        )
        # The kept copy of each repeated id: the first by event time, ties broken by every other column.
        con.execute(
            f"CREATE TEMP TABLE kept_repeats AS SELECT {columns} FROM ("
            f"  SELECT *, row_number() OVER (PARTITION BY {id_col} ORDER BY {time_col}, {tiebreak}) AS _keep"
            f"  FROM labelled WHERE {RULE_COLUMN} IS NULL AND hash({id_col}) IN (SELECT id_hash FROM repeated)"
            f") WHERE _keep = 1"
        )
        with writer.parquet_file(EVENTS_FILE, spec.schema) as events:
            for hour in range(24):
                in_hour = _hour_bounds(spec, date, hour)
                table = con.sql(
                    f"SELECT {columns} FROM labelled WHERE {RULE_COLUMN} IS NULL AND {in_hour} "
                    f"AND hash({id_col}) NOT IN (SELECT id_hash FROM repeated) "
                    f"UNION ALL SELECT {columns} FROM kept_repeats WHERE {in_hour} "
                    f"ORDER BY {time_col}, {id_col}"
                ).to_arrow_table()
                events.write(table.cast(spec.schema), row_group_size=EVENTS_ROW_GROUP)
                rows_by_hour[hour] = table.num_rows
                if "city" in spec.schema.names:
                    for item in pc.value_counts(table.column("city")).to_pylist():
                        rows_by_city[item["values"]] = rows_by_city.get(item["values"], 0) + item["counts"]
                if reporter and hour % 6 == 5:
                    reporter.progress(hour + 1, 24, f"{dataset} {date} hours written")
        if rows_rejected:
            rejected = con.sql(
                f"SELECT * FROM labelled WHERE {RULE_COLUMN} IS NOT NULL ORDER BY ALL NULLS LAST"
            ).to_arrow_table()
            writer.write_table(REJECTED_FILE, rejected)
    rows = events.rows
    rows_valid = rows_landed - rows_rejected
    summary = {
        "dataset": dataset,
        "date": date,
        "rows": rows,
        "rows_landed": rows_landed,
        "duplicates_removed": rows_valid - rows,
        "rows_rejected": rows_rejected,
        "rejected_by_rule": rejected_by_rule,
        "hours_present": sorted(h for h, n in rows_by_folder_hour.items() if n > 0),
        "rows_by_hour": {f"{h:02d}": n for h, n in rows_by_hour.items()},
        "success_marker": bool(status["success"]),
        "marker_sha256": status["marker_sha256"],
        "schema_ok": True,
        "files_landed": len(files),
    }
    if "city" in spec.schema.names:
        summary["rows_by_city"] = dict(sorted(rows_by_city.items()))
    writer.commit(summary)
    if reporter:
        reporter.info(
            f"{dataset} {date}: {rows} rows committed ({summary['duplicates_removed']} duplicates, "
            f"{rows_rejected} quarantined) -> {out_uri}"
        )
    return summary


def ingest_dates(landing_uri: str, dataset: str, targets: dict[str, str], reporter: Reporter | None = None) -> dict:
    """Ingest several dates; rejected dates are collected and raised together at the end."""
    landing_dataset(dataset)  # an unknown dataset fails before any date is read
    summaries, rejections = {}, []
    dates = sorted(targets)
    for done, date in enumerate(dates):
        if reporter:
            reporter.progress(done, len(dates), f"{dataset} dates ingested")
        try:
            summaries[date] = ingest_day(landing_uri, dataset, date, targets[date], reporter)
        except DataRejected as exc:
            rejections.append(str(exc))
            if reporter:
                reporter.info(f"REJECTED {exc}")
    if reporter:
        reporter.progress(len(dates), len(dates), f"{dataset} dates ingested")
    if rejections:
        raise DataRejected("; ".join(rejections))
    return {"dataset": dataset, "dates": summaries}


def run(params: IngestParams, reporter: Reporter) -> dict:
    return ingest_dates(params.landing_uri, params.dataset, params.targets, reporter)


main = workload_main(IngestParams, run)

if __name__ == "__main__":
    raise SystemExit(main())
