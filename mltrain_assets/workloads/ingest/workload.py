"""Ingest landed days into committed, validated, deduplicated event tables (both datasets).

``python -m mltrain_assets.workloads.ingest.workload --params JSON`` (``IngestParams``: ``dataset``,
``landing_uri``, ``targets`` ``{"YYYY-MM-DD": "<versioned out uri>", ...}``, ``fingerprints``, ``listings``).

Per date, out of core (DuckDB reads the landed files in place and spills past its memory limit;
the events are written an hour at a time), so a 50M-row day runs in a few GB. Every way a day can
be malformed is a *data rejection* (``DataRejected``, exit code 3: the step fails once, no retry)
whose message names the dataset, the date, the rule and, where one is to blame, the file
(``rides 2026-11-27: rule readable_parquet: hour=07/part-00000.parquet is not a parquet file (...)``);
a rejected day commits nothing. In order:

1. the layout (``layout``: every non-hidden file is ``hour=00..23/<name>.parquet``), part files
   present (``files_present``) and the ``_SUCCESS`` marker (``landing_complete``);
2. each part file from its footer only: not empty (``non_empty_file``), readable parquet, not
   truncated (``readable_parquet``), its schema against ``registry.landing_dataset(dataset).schema``
   (``schema``: missing / extra / mistyped columns, per file, so mixed schemas across hours are
   named); then rows at all (``non_empty_day``);
3. every row labelled with the first rule it breaks: ``key_not_null`` (id and event time; any such
   row rejects the day), the dataset's ``row_rules`` (DuckDB SQL), ``event_time_in_date``,
   ``required_not_null``. More than ``MAX_REJECTED_FRACTION`` of the rows breaking rules rejects
   the day, naming the worst rule and the files holding most of its rows; fewer are quarantined in
   ``rejected.parquet`` (with a ``rule`` column). A file that cannot be decoded is ``readable_parquet``;
4. duplicate ids (redelivered events): more than the dataset's ``max_duplicate_fraction`` of the
   landed rows rejects the day (``duplicate_keys``); fewer are dropped, keeping the first by event
   time (ties broken by every other column, so the pick does not depend on file order);
5. completeness of what would be committed (``rules.completeness_violations``, the rule the
   ``landed_complete`` gate shows): ``hourly_buckets_complete``, ``plausible_hourly_counts``,
   ``min_rows_per_day``;
6. ``events.parquet`` written sorted by (event time, id), one UTC hour after another (row groups of
   ``queries.EVENTS_ROW_GROUP`` rows, so readers prune by time), and the version committed, unless the
   landed files moved meanwhile (``LandingChanged``: not a data error, the step retries).

With several dates, the others are still ingested, then the process exits with the data-rejected
code listing every rejected date. A date whose output version is already committed is skipped (its
committed summary is returned): retries are idempotent.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from mltrain_assets.artifacts import AlreadyCommitted, ArtifactWriter, join_uri, read_manifest
from mltrain_assets.landing import day_status, day_uri
from mltrain_assets.registry import landing_dataset
from mltrain_assets.schemas import DatasetSpec
from mltrain_assets.workloads.common.duck import (
    DEFAULT_MEMORY_LIMIT,
    duckdb_connection,
    duckdb_path,
    reads_in_place,
)
from mltrain_assets.workloads.common.runtime import DataRejected, Reporter, workload_main
from mltrain_assets.workloads.ingest.checks import (
    _check_landed_day,
    _check_landing_unchanged,
    _decode_error,
)
from mltrain_assets.workloads.ingest.params import IngestParams
from mltrain_assets.workloads.ingest.queries import DayPlan, DaySql, Written, plan_day, write_events, write_rejected

PRODUCER = IngestParams.module


def _open_writer(out_uri: str, root_uri: str, status: dict) -> ArtifactWriter:
    """The writer of the day's version, its inputs the landed files it was read from."""
    return ArtifactWriter(
        out_uri,
        producer=PRODUCER,
        code_version=IngestParams.code_version,
        inputs={
            "landing": root_uri,
            "marker_sha256": status["marker_sha256"],
            "files": status["files"],
            "listing": status["fingerprint"],
        },
    )


def _check_written_as_planned(dataset: str, date: str, written: Written, plan: DayPlan) -> None:
    if written.rows_by_hour != plan.expected_by_hour:  # the plan and the write disagree: a bug, never commit it
        raise RuntimeError(
            f"{dataset} {date}: wrote {written.rows_by_hour} rows by hour, planned {plan.expected_by_hour}"
        )


def _day_summary(
    spec: DatasetSpec,
    dataset: str,
    date: str,
    status: dict,
    plan: DayPlan,
    written: Written,
    rows_by_folder_hour: dict[int, int],
    landing_fingerprint: str | None,
) -> dict:
    """The summary committed with the day's version (and returned by ``ingest_day``)."""
    scan = plan.scan
    rows_valid = scan.rows_landed - scan.rows_rejected
    summary = {
        "dataset": dataset,
        "date": date,
        "rows": written.rows,
        "rows_landed": scan.rows_landed,
        "duplicates_removed": rows_valid - written.rows,
        "rows_rejected": scan.rows_rejected,
        "rejected_by_rule": scan.counts,
        "hours_present": sorted(h for h, n in rows_by_folder_hour.items() if n > 0),
        "rows_by_hour": {f"{h:02d}": n for h, n in written.rows_by_hour.items()},
        "success_marker": bool(status["success"]),
        "marker_sha256": status["marker_sha256"],
        "schema_ok": True,
        "files_landed": len(status["files"]),
    }
    if landing_fingerprint:
        summary["landing_fingerprint"] = landing_fingerprint
    for column, counts in written.rows_by_value.items():
        summary[f"rows_by_{column}"] = dict(sorted(counts.items()))
    return summary


def ingest_day(
    landing_uri: str,
    dataset: str,
    date: str,
    out_uri: str,
    reporter: Reporter | None = None,
    *,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    expected_listing: str | None = None,
    landing_fingerprint: str | None = None,
) -> dict:
    """Validate, quarantine, deduplicate and commit one landed day; returns the committed summary.

    Out of core: DuckDB reads local landed files in place (remote ones once, into a temp table) and spills
    past ``memory_limit``; the events are written hour by hour (each hour's rows sorted), so memory holds one
    hour, not the day.
    ``expected_listing``: the listing fingerprint the control plane versioned this day by; a day
    whose listing differs (or changes before the commit) raises ``LandingChanged``.
    ``landing_fingerprint``: its content fingerprint, recorded in the summary.
    """
    spec = landing_dataset(dataset)
    dt.date.fromisoformat(date)
    committed = read_manifest(out_uri)
    if committed is not None:
        if reporter:
            reporter.info(f"{dataset} {date}: already committed at {out_uri}; skipping")
        return committed["summary"]

    status = day_status(landing_uri, dataset, date)
    root_uri = day_uri(landing_uri, dataset, date)
    rows_by_folder_hour = _check_landed_day(landing_uri, spec, dataset, date, status, root_uri, expected_listing)
    files = status["files"]
    sql = DaySql.of(spec, date)
    with duckdb_connection(memory_limit) as con:
        rel_of = {duckdb_path(con, join_uri(root_uri, rel)): rel for rel in files}
        try:
            plan = plan_day(con, spec, dataset, date, sql, rel_of, reads_in_place(root_uri))
            if reporter:
                reporter.info(
                    f"{dataset} {date}: {plan.scan.rows_landed} rows landed in {len(files)} files, "
                    f"{plan.scan.rows_rejected} break rules, {plan.duplicates} duplicates"
                )
            writer = _open_writer(out_uri, root_uri, status)
            written = write_events(con, writer, spec, dataset, date, sql, reporter)
            if plan.scan.rows_rejected:
                write_rejected(con, writer, sql)
        except (duckdb.InvalidInputException, duckdb.ConversionException) as exc:
            rejection = _decode_error(dataset, date, exc, rel_of)
            if rejection is None:
                raise
            raise rejection from exc
    _check_written_as_planned(dataset, date, written, plan)
    summary = _day_summary(spec, dataset, date, status, plan, written, rows_by_folder_hour, landing_fingerprint)
    _check_landing_unchanged(landing_uri, dataset, date, status)
    writer.commit(summary)
    if reporter:
        reporter.info(
            f"{dataset} {date}: {written.rows} rows committed ({summary['duplicates_removed']} duplicates, "
            f"{plan.scan.rows_rejected} quarantined) -> {out_uri}"
        )
    return summary


def ingest_dates(
    landing_uri: str,
    dataset: str,
    targets: dict[str, str],
    reporter: Reporter | None = None,
    listings: dict[str, str] | None = None,
    fingerprints: dict[str, str] | None = None,
) -> dict:
    """Ingest several dates; rejected dates are collected and raised together at the end."""
    landing_dataset(dataset)  # an unknown dataset fails before any date is read
    summaries, rejections = {}, []
    dates = sorted(targets)
    for done, date in enumerate(dates):
        if reporter:
            reporter.progress(done, len(dates), f"{dataset} dates ingested")
        try:
            summaries[date] = ingest_day(
                landing_uri,
                dataset,
                date,
                targets[date],
                reporter,
                expected_listing=(listings or {}).get(date),
                landing_fingerprint=(fingerprints or {}).get(date),
            )
        except DataRejected as exc:
            rejections.append(str(exc))
            if reporter:
                reporter.info(f"REJECTED {exc}")
        except AlreadyCommitted as adopted:  # a concurrent run committed this date first
            summaries[date] = adopted.manifest["summary"]
    if reporter:
        reporter.progress(len(dates), len(dates), f"{dataset} dates ingested")
    if rejections:
        raise DataRejected("; ".join(rejections))
    return {"dataset": dataset, "dates": summaries}


def run(params: IngestParams, reporter: Reporter) -> dict:
    return ingest_dates(
        params.landing_uri, params.dataset, params.targets, reporter, params.listings, params.fingerprints
    )


main = workload_main(IngestParams, run)

if __name__ == "__main__":
    raise SystemExit(main())
