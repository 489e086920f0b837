"""One landed day's DuckDB queries: every row labelled with the first rule it breaks, counted, deduplicated, written.

``plan_day`` labels the landed rows (a view over local files, a table for remote ones), counts them by rule, file
and hour, ranks the copies of repeated ids and rejects the day on row rules, duplicates or completeness;
``write_events`` then writes ``events.parquet`` one UTC hour after another and ``write_rejected`` quarantines the
rows that break a rule. The order of the checks and what each rejects: ``workload.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow.compute as pc

from mltrain_assets.artifacts import ArtifactWriter
from mltrain_assets.schemas import DatasetSpec
from mltrain_assets.workloads.common.duck import sql_list
from mltrain_assets.workloads.common.runtime import Reporter
from mltrain_assets.workloads.ingest.checks import (
    FILE_COLUMN,
    RULE_COLUMN,
    _check_duplicates,
    _hour_bounds,
    _quote,
    _reject,
    _row_rule_violations,
    row_rules,
)
from mltrain_assets.workloads.ingest.params import EVENTS_FILE, REJECTED_FILE
from mltrain_assets.workloads.ingest.rules import completeness_violations

EVENTS_ROW_GROUP = 1 << 20  # rows per row group of events.parquet: readers prune by event time


@dataclass(frozen=True)
class DaySql:
    """The SQL fragments one day's queries share: quoted key columns, the column list, the rule labels."""

    rules: dict[str, str]
    id_col: str
    time_col: str
    columns: str
    first_broken: str
    tiebreak: str

    @classmethod
    def of(cls, spec: DatasetSpec, date: str) -> DaySql:
        rules = row_rules(spec, date)
        others = [_quote(f.name) for f in spec.schema if f.name not in (spec.id_column, spec.time_column)]
        return cls(
            rules=rules,
            id_col=_quote(spec.id_column),
            time_col=_quote(spec.time_column),
            columns=", ".join(_quote(name) for name in spec.schema.names),
            first_broken=" ".join(f"WHEN NOT COALESCE(({sql}), FALSE) THEN '{name}'" for name, sql in rules.items()),
            tiebreak=", ".join(f"{c} ASC NULLS LAST" for c in others),
        )


@dataclass
class RuleScan:
    """One pass over the labelled rows: rows by first broken rule (and file), valid rows by hour."""

    counts: dict[str, int]
    by_file: dict[str, dict[str, int]]
    valid_by_hour: dict[int, int]
    rows_landed: int = 0

    @property
    def rows_rejected(self) -> int:
        return sum(self.counts.values())


@dataclass
class DayPlan:
    """What the checks found and what the write must produce: the rule scan, duplicates, rows per hour."""

    scan: RuleScan
    duplicates: int
    expected_by_hour: dict[int, int]


@dataclass
class Written:
    """What ``events.parquet`` received: rows in all, by hour, and by value of each ``DatasetSpec.count_by`` column."""

    rows: int
    rows_by_hour: dict[int, int]
    rows_by_value: dict[str, dict[str, int]]


def _label_rows(con: duckdb.DuckDBPyConnection, sql: DaySql, rel_of: dict[str, str], in_place: bool) -> None:
    """``labelled``: every landed row with the first rule it breaks and the file it came from.

    A view over local files (read in place by each later query); a table for a remote landing zone, so its
    files are fetched once, not once per query (the rule scan, the duplicates and 24 hourly writes).
    """
    kind = "VIEW" if in_place else "TABLE"
    con.execute(
        f"CREATE TEMP {kind} labelled AS SELECT {sql.columns}, CASE {sql.first_broken} END AS {RULE_COLUMN}, "
        f"{FILE_COLUMN} FROM read_parquet({sql_list(list(rel_of))}, union_by_name = true, "
        f"filename = '{FILE_COLUMN}')"
    )


def _scan_rules(con: duckdb.DuckDBPyConnection, sql: DaySql, rel_of: dict[str, str]) -> RuleScan:
    # One pass: rows by (first broken rule, file, hour of the valid ones).
    scanned = con.sql(
        f"SELECT {RULE_COLUMN}, {FILE_COLUMN}, CASE WHEN {RULE_COLUMN} IS NULL THEN hour({sql.time_col}) END, "
        f"count(*) FROM labelled GROUP BY ALL"
    ).fetchall()
    scan = RuleScan(
        counts=dict.fromkeys(sql.rules, 0),
        by_file={name: {} for name in sql.rules},
        valid_by_hour=dict.fromkeys(range(24), 0),
    )
    for rule, path, hour, n in scanned:
        scan.rows_landed += n
        if rule is None:
            scan.valid_by_hour[int(hour)] += n
            continue
        scan.counts[rule] += n
        rel = rel_of.get(path, path)
        scan.by_file[rule][rel] = scan.by_file[rule].get(rel, 0) + n
    return scan


def _find_duplicates(con: duckdb.DuckDBPyConnection, sql: DaySql) -> dict[int, int]:
    """Rank every copy of a repeated id (tables ``repeated``, ``repeats``); the copies dropped, by hour."""
    # Duplicate ids, found by an 8-byte hash of the id (cheap to group); a collision only sends a
    # unique id through the exact per-id pick below, which keeps it.
    con.execute(
        f"CREATE TEMP TABLE repeated AS SELECT hash({sql.id_col}) AS id_hash FROM labelled "
        f"WHERE {RULE_COLUMN} IS NULL GROUP BY 1 HAVING count(*) > 1"
    )
    # Every copy of a repeated id, ranked: the kept one is the first by event time, ties broken by every other column.
    con.execute(
        f"CREATE TEMP TABLE repeats AS SELECT {sql.columns}, row_number() OVER "
        f"(PARTITION BY {sql.id_col} ORDER BY {sql.time_col}, {sql.tiebreak}) AS _keep "
        f"FROM labelled WHERE {RULE_COLUMN} IS NULL AND hash({sql.id_col}) IN (SELECT id_hash FROM repeated)"
    )
    return dict(con.sql(f"SELECT hour({sql.time_col}), count(*) FROM repeats WHERE _keep > 1 GROUP BY 1").fetchall())


def plan_day(
    con: duckdb.DuckDBPyConnection,
    spec: DatasetSpec,
    dataset: str,
    date: str,
    sql: DaySql,
    rel_of: dict[str, str],
    in_place: bool,
) -> DayPlan:
    """Label, count and deduplicate the landed rows; reject the day on row rules, duplicates or completeness."""
    _label_rows(con, sql, rel_of, in_place)
    scan = _scan_rules(con, sql, rel_of)
    _reject(dataset, date, _row_rule_violations(spec, scan.counts, scan.by_file, scan.rows_landed, con, sql.rules))
    dropped_by_hour = _find_duplicates(con, sql)
    duplicates = sum(int(n) for n in dropped_by_hour.values())
    _check_duplicates(spec, dataset, date, duplicates, scan.rows_landed)
    expected_by_hour = {h: scan.valid_by_hour[h] - int(dropped_by_hour.get(h, 0)) for h in range(24)}
    _reject(
        dataset,
        date,
        completeness_violations(expected_by_hour, sum(expected_by_hour.values()), spec.min_rows_per_day),
    )
    return DayPlan(scan, duplicates, expected_by_hour)


def write_events(
    con: duckdb.DuckDBPyConnection,
    writer: ArtifactWriter,
    spec: DatasetSpec,
    dataset: str,
    date: str,
    sql: DaySql,
    reporter: Reporter | None,
) -> Written:
    """Write ``events.parquet`` one UTC hour after another: the valid rows, one copy of each id, sorted."""
    rows_by_hour = dict.fromkeys(range(24), 0)
    rows_by_value: dict[str, dict[str, int]] = {column: {} for column in spec.count_by}
    with writer.parquet_file(EVENTS_FILE, spec.schema) as events:
        for hour in range(24):
            in_hour = _hour_bounds(spec, date, hour)
            table = con.sql(
                f"SELECT {sql.columns} FROM labelled WHERE {RULE_COLUMN} IS NULL AND {in_hour} "
                f"AND hash({sql.id_col}) NOT IN (SELECT id_hash FROM repeated) "
                f"UNION ALL SELECT {sql.columns} FROM repeats WHERE _keep = 1 AND {in_hour} "
                f"ORDER BY {sql.time_col}, {sql.id_col}"
            ).to_arrow_table()
            events.write(table.cast(spec.schema), row_group_size=EVENTS_ROW_GROUP)
            rows_by_hour[hour] = table.num_rows
            for column, counts in rows_by_value.items():
                for item in pc.value_counts(table.column(column)).to_pylist():
                    counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]
            if reporter and hour % 6 == 5:
                reporter.progress(hour + 1, 24, f"{dataset} {date} hours written")
    return Written(events.rows, rows_by_hour, rows_by_value)


def write_rejected(con: duckdb.DuckDBPyConnection, writer: ArtifactWriter, sql: DaySql) -> None:
    """Quarantine the rows that break a rule in ``rejected.parquet``, with the rule each breaks first."""
    rejected = con.sql(
        f"SELECT {sql.columns}, {RULE_COLUMN} FROM labelled WHERE {RULE_COLUMN} IS NOT NULL ORDER BY ALL NULLS LAST"
    ).to_arrow_table()
    writer.write_table(REJECTED_FILE, rejected)
