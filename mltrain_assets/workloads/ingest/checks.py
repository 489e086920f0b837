"""What a landed day must satisfy, and how a rejection names the rule, the date and the file.

The rule names and the checks ``workload.py`` runs before and after reading a day (layout, files,
schema, row rules, duplicates, landing unchanged); each failure is a ``DataRejected`` naming the
dataset, date, rule and (where one is to blame) the file.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
from collections.abc import Iterable

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from mltrain_assets.artifacts import filesystem
from mltrain_assets.landing import SUCCESS_MARKER, day_status, success_uri
from mltrain_assets.schemas import DatasetSpec
from mltrain_assets.workloads.common.runtime import DataRejected

MAX_REJECTED_FRACTION = 0.01


RULE_COLUMN = "rule"


FILE_COLUMN = "_mltrain_file"  # DuckDB's read_parquet(filename=...): which landed file a row came from


SHOWN = 3  # files (or problems) a message names before "... and N more"


LAYOUT_RULE = "layout"


FILES_RULE = "files_present"


MARKER_RULE = "landing_complete"


EMPTY_FILE_RULE = "non_empty_file"


READABLE_RULE = "readable_parquet"


SCHEMA_RULE = "schema"


EMPTY_DAY_RULE = "non_empty_day"


KEY_RULE = "key_not_null"


EVENT_TIME_RULE = "event_time_in_date"


NOT_NULL_RULE = "required_not_null"


DUPLICATES_RULE = "duplicate_keys"


class LandingChanged(RuntimeError):
    """The landed files changed while this day was ingested: not a data error, the step retries."""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _shown(items: list[str], what: str = "more") -> str:
    extra = len(items) - SHOWN
    return "; ".join(items[:SHOWN] + ([f"... and {extra} {what}"] if extra > 0 else []))


def _reject(dataset: str, date: str, violations: Iterable[tuple[str, str]]) -> None:
    """Raise one ``DataRejected`` naming ``dataset date: rule R: detail`` for each violation (none: return)."""
    violations = list(violations)
    if violations:
        raise DataRejected("; ".join(f"{dataset} {date}: rule {rule}: {detail}" for rule, detail in violations))


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
    id_col, time_col = _quote(spec.id_column), _quote(spec.time_column)
    rules = {KEY_RULE: f"{id_col} IS NOT NULL AND {time_col} IS NOT NULL", **spec.row_rules}
    rules[EVENT_TIME_RULE] = (
        f"{time_col} >= TIMESTAMPTZ '{start.isoformat()} 00:00:00+00' "
        f"AND {time_col} < TIMESTAMPTZ '{end.isoformat()} 00:00:00+00'"
    )
    rules[NOT_NULL_RULE] = " AND ".join(f"{_quote(f.name)} IS NOT NULL" for f in spec.schema if not f.nullable)
    return rules


def _unreadable(fs, path: str, rel: str, size: int, exc: Exception) -> str | None:
    """Why a file whose footer could not be parsed is not readable parquet, or ``None`` if the store failed us.

    If the file's first and last bytes can be read, the store works and the bytes are at fault (a
    data error); if not, the error was the store's (re-raised by the caller: a retry may help).
    """
    try:
        with fs.open(path, "rb") as handle:
            head = handle.read(4)
            handle.seek(max(size - 8, 0))
            tail = handle.read(8)
    except Exception:
        return None
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if head == b"PAR1" and tail[-4:] != b"PAR1":
        return f"{rel} is truncated: it starts as parquet but has no footer ({reason})"
    if head == b"PAR1":
        return f"{rel} has a corrupt parquet footer ({reason})"
    return f"{rel} is not a parquet file ({reason})"


def _check_files(dataset: str, spec: DatasetSpec, date: str, root_uri: str, files: dict[str, int]) -> dict[int, int]:
    """Every part file from its footer only: not empty, readable, the contract's schema; rows per hour folder."""
    fs, root = filesystem(root_uri)
    empty, unreadable, mistyped = [], [], []
    rows_by_folder_hour: dict[int, int] = {}
    for rel, size in sorted(files.items()):
        if size == 0:
            empty.append(f"{rel} is empty (0 bytes)")
            continue
        path = posixpath.join(root, rel)
        try:
            with fs.open(path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                file_schema = parquet.schema_arrow
                rows = parquet.metadata.num_rows
        except (pa.ArrowException, OSError) as exc:
            reason = _unreadable(fs, path, rel, size, exc)
            if reason is None:
                raise
            unreadable.append(reason)
            continue
        problems = schema_problems(file_schema, spec.schema)
        if problems:
            mistyped.append(f"{rel}: {', '.join(problems)}")
            continue
        hour = int(rel.split("/")[0].removeprefix("hour="))
        rows_by_folder_hour[hour] = rows_by_folder_hour.get(hour, 0) + rows
    violations = []
    if empty:
        violations.append((EMPTY_FILE_RULE, _shown(empty, "more empty files")))
    if unreadable:
        violations.append((READABLE_RULE, _shown(unreadable, "more unreadable files")))
    if mistyped:
        mixed = len(files) - len(mistyped) - len(empty) - len(unreadable)
        also = f" ({len(mistyped)} of {len(files)} files differ from the contract; {mixed} match it)" if mixed else ""
        violations.append((SCHEMA_RULE, _shown(mistyped, "more files") + also))
    _reject(dataset, date, violations)
    return rows_by_folder_hour


def _hour_bounds(spec: DatasetSpec, date: str, hour: int) -> str:
    start = dt.datetime.combine(dt.date.fromisoformat(date), dt.time(hour), dt.UTC)
    end = start + dt.timedelta(hours=1)
    time_col = _quote(spec.time_column)
    return f"{time_col} >= TIMESTAMPTZ '{start.isoformat()}' AND {time_col} < TIMESTAMPTZ '{end.isoformat()}'"


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / max(whole, 1):.1f}%"


def _most_in(counts: dict[str, int]) -> str:
    """``hour=16/part-00000.parquet (4,000), ...``: the files holding most of a rule's rows."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    shown = ", ".join(f"{rel} ({n:,})" for rel, n in ranked[:SHOWN])
    return shown + (f" and {len(ranked) - SHOWN} more files" if len(ranked) > SHOWN else "")


def _literal(value: object) -> str:
    """A value as a message shows it: strings quoted, null as ``null``, times in ISO form."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return str(value)


def rule_columns(spec: DatasetSpec, rule: str, sql: str) -> list[str]:
    """The contract's columns a row rule reads, in the order its SQL names them (the key rule: id, then time)."""
    if rule == KEY_RULE:
        return [spec.id_column, spec.time_column]
    if rule == NOT_NULL_RULE:
        return [f.name for f in spec.schema if not f.nullable]
    at = {}
    for name in spec.schema.names:
        # A bare identifier (not part of a longer one) or a quoted one; string literals name no column here.
        match = re.search(rf'(?<![\w"]){re.escape(name)}(?![\w"])|"{re.escape(name)}"', sql)
        if match:
            at[name] = match.start()
    return sorted(at, key=at.__getitem__)


def _null_columns(con: duckdb.DuckDBPyConnection, rule: str, columns: list[str]) -> list[tuple[str, int]]:
    """Of ``columns``, those null in the rows labelled ``rule``, with how many rows (most first)."""
    counts = con.execute(
        "SELECT "
        + ", ".join(f"count(*) FILTER (WHERE {_quote(c)} IS NULL)" for c in columns)
        + f" FROM labelled WHERE {RULE_COLUMN} = ?",
        [rule],
    ).fetchone()
    nulls = [(column, int(n)) for column, n in zip(columns, counts or (), strict=True) if n]
    return sorted(nulls, key=lambda item: -item[1])


def _offending_values(con: duckdb.DuckDBPyConnection, rule: str, columns: list[str]) -> tuple[list[tuple], int]:
    """The ``SHOWN`` most frequent offending values (tuples over ``columns``) of a rule, and how many distinct."""
    cols = ", ".join(_quote(c) for c in columns)
    rows = con.execute(
        f"SELECT {cols}, count(*) AS n, count(*) OVER () AS distinct_values FROM labelled "
        f"WHERE {RULE_COLUMN} = ? GROUP BY ALL ORDER BY n DESC, {cols} LIMIT {SHOWN}",
        [rule],
    ).fetchall()
    return [tuple(row[: len(columns)]) for row in rows], int(rows[0][-1]) if rows else 0


def _what_breaks(
    con: duckdb.DuckDBPyConnection | None, spec: DatasetSpec, rule: str, sql: str, rows: int, landed: int
) -> str:
    """``clicked = 7, 2 in 11.1% of rows (1,110 of 10,000)``: the rule's column(s) and up to three offending values."""
    share = f"in {_pct(rows, landed)} of rows ({rows:,} of {landed:,})"
    columns = rule_columns(spec, rule, sql)
    if con is None or not columns:
        return f"{rows:,} rows break it {share}"
    if rule in (KEY_RULE, NOT_NULL_RULE):
        nulls = _null_columns(con, rule, columns)
        if nulls:
            named = ", ".join(
                f"{column} is null in {_pct(n, landed)} of rows ({n:,} of {landed:,})" for column, n in nulls[:SHOWN]
            )
            return named + (f" and {len(nulls) - SHOWN} more columns" if len(nulls) > SHOWN else "")
    values, distinct = _offending_values(con, rule, columns)
    shown = ", ".join(
        _literal(value[0]) if len(columns) == 1 else "(" + ", ".join(_literal(v) for v in value) + ")"
        for value in values
    )
    more = ", ..." if distinct > len(values) else ""
    if len(columns) == 1:
        return f"{columns[0]} = {shown}{more} {share}"
    return f"({', '.join(columns)}) = {shown}{more} {share}"


def _row_rule_violations(
    spec: DatasetSpec,
    counts: dict[str, int],
    by_file: dict[str, dict[str, int]],
    rows_landed: int,
    con: duckdb.DuckDBPyConnection | None = None,
    rules: dict[str, str] | None = None,
) -> list[tuple[str, str]]:
    """Null keys (any), or more than ``MAX_REJECTED_FRACTION`` of the rows breaking rules: each broken rule with its
    column(s) and up to three offending values (read from ``labelled`` on ``con``), the files holding most named."""
    sql = rules or {}
    if counts.get(KEY_RULE):
        what = _what_breaks(con, spec, KEY_RULE, "", counts[KEY_RULE], rows_landed)
        return [(KEY_RULE, f"{what} (a key: no such row can be kept); in {_most_in(by_file[KEY_RULE])}")]
    rejected = sum(counts.values())
    if rejected <= MAX_REJECTED_FRACTION * rows_landed:
        return []
    broken = sorted((name for name in counts if counts[name]), key=lambda name: -counts[name])
    overall = (
        f"{rejected:,} of {rows_landed:,} landed rows ({_pct(rejected, rows_landed)}) break row rules, more than the "
        f"{100 * MAX_REJECTED_FRACTION:g}% allowed"
    )
    return [
        (
            name,
            _what_breaks(con, spec, name, sql.get(name, ""), counts[name], rows_landed)
            + (f"; {overall}" if number == 0 else "")
            + f"; most in {_most_in(by_file[name])}",
        )
        for number, name in enumerate(broken)
    ]


def _decode_error(dataset: str, date: str, exc: duckdb.Error, rel_of: dict[str, str]) -> DataRejected | None:
    """A DuckDB error decoding one landed file (a corrupt page behind a valid footer) as a rejection naming it."""
    text = str(exc)
    for path, rel in rel_of.items():
        if path in text:
            detail = text.split(": ", 1)[-1].replace(path, rel).strip().splitlines()[0]
            return DataRejected(f"{dataset} {date}: rule {READABLE_RULE}: {rel} cannot be decoded ({detail})")
    return None


def _check_listing(dataset: str, date: str, status: dict, expected_listing: str | None) -> None:
    """``LandingChanged`` unless the day's listing is the one the control plane versioned it by."""
    if expected_listing and status["fingerprint"] != expected_listing:
        raise LandingChanged(
            f"{dataset} {date}: the landed files changed since the control plane fingerprinted them "
            f"(listing {status['fingerprint']}, expected {expected_listing}): a producer is still writing"
        )


def _check_landing(landing_uri: str, dataset: str, date: str, status: dict, root_uri: str) -> None:
    """Reject a day whose landing is malformed: files outside the layout, no part files, no marker."""
    if status["problems"]:
        _reject(
            dataset,
            date,
            [
                (
                    LAYOUT_RULE,
                    f"{len(status['problems'])} file(s) outside the landing layout "
                    f"hour=HH/part-*.parquet: {_shown(status['problems'], 'more files')}",
                )
            ],
        )
    if not status["files"]:
        marker = f"a {SUCCESS_MARKER} marker but " if status["success"] else ""
        _reject(dataset, date, [(FILES_RULE, f"{marker}no part files under {root_uri}")])
    if not status["success"]:
        _reject(
            dataset,
            date,
            [
                (
                    MARKER_RULE,
                    f"no {SUCCESS_MARKER} marker at {success_uri(landing_uri, dataset, date)} "
                    f"({len(status['hours'])}/24 hourly buckets present)",
                )
            ],
        )


def _check_landed_day(
    landing_uri: str,
    spec: DatasetSpec,
    dataset: str,
    date: str,
    status: dict,
    root_uri: str,
    expected_listing: str | None,
) -> dict[int, int]:
    """The checks before any row is read: listing, layout, marker, each file's footer, rows at all; rows per hour."""
    _check_listing(dataset, date, status, expected_listing)
    _check_landing(landing_uri, dataset, date, status, root_uri)
    files = status["files"]
    rows_by_folder_hour = _check_files(dataset, spec, date, root_uri, files)
    if sum(rows_by_folder_hour.values()) == 0:
        _reject(dataset, date, [(EMPTY_DAY_RULE, f"{len(files)} part files hold 0 rows")])
    return rows_by_folder_hour


def _check_duplicates(spec: DatasetSpec, dataset: str, date: str, duplicates: int, rows_landed: int) -> None:
    if duplicates > spec.max_duplicate_fraction * rows_landed:
        _reject(
            dataset,
            date,
            [
                (
                    DUPLICATES_RULE,
                    f"{duplicates:,} of {rows_landed:,} landed rows ({_pct(duplicates, rows_landed)}) repeat "
                    f"the {spec.id_column} of an earlier row, more than the "
                    f"{100 * spec.max_duplicate_fraction:g}% allowed (a replayed delivery?)",
                )
            ],
        )


def _check_landing_unchanged(landing_uri: str, dataset: str, date: str, status: dict) -> None:
    # What was read must still be what landed: a re-delivery meanwhile is ingested under its own version.
    now = day_status(landing_uri, dataset, date)["fingerprint"]
    if now != status["fingerprint"]:
        raise LandingChanged(f"{dataset} {date}: the landed files changed while they were ingested; not committed")
