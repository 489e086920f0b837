"""Ingestion of landed days: schema and row rules, quarantine, deduplication, atomic commits."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mltrain_assets.artifacts import normalize_uri, read_manifest, read_table
from mltrain_assets.landing import bytes_to_hash, content_digests, day_status
from mltrain_assets.pipelines.demand.contract import RIDES_SCHEMA
from mltrain_assets.pipelines.demand.simulate import write_rides_day
from mltrain_assets.workloads.common.runtime import EXIT_DATA_REJECTED, DataRejected
from mltrain_assets.workloads.ingest.params import IngestParams
from mltrain_assets.workloads.ingest.workload import ingest_dates, ingest_day

DATE = "2026-03-10"
VOLUME = 20_000
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def landing(tmp_path) -> tuple[Path, str, dict]:
    """One landed simulated day: (landing folder, its URI, the simulator's summary)."""
    root = tmp_path / "landing"
    summary = write_rides_day(normalize_uri(str(root)), DATE, VOLUME)
    return root, normalize_uri(str(root)), summary


def _part(root: Path, hour: int, date: str = DATE) -> Path:
    return root / "rides" / f"date={date}" / f"hour={hour:02d}" / "part-00000.parquet"


def _rewrite(path: Path, change) -> pa.Table:
    """Rewrite one landed part file with ``change(table) -> table``."""
    table = change(pq.read_table(path))
    pq.write_table(table, path)
    return table


def _set(table: pa.Table, column: str, rows: int, value) -> pa.Table:
    """``table`` with ``column`` set to ``value`` on its first ``rows`` rows."""
    values = table.column(column).to_pylist()
    values[:rows] = [value] * rows
    index = table.schema.get_field_index(column)
    return table.set_column(index, table.schema.field(index), pa.array(values, table.schema.field(index).type))


def test_a_clean_day_is_deduplicated_sorted_and_committed(landing, tmp_path):
    _, landing_uri, simulated = landing
    out = normalize_uri(str(tmp_path / "out"))
    summary = ingest_day(landing_uri, "rides", DATE, out)

    events = read_table(out, "events.parquet")
    assert events.schema.equals(RIDES_SCHEMA)
    assert summary["rows_landed"] == simulated["rows"]
    assert summary["duplicates_removed"] == simulated["duplicates"] > 0
    assert summary["rows"] == events.num_rows == simulated["rows"] - simulated["duplicates"]
    assert pc.count_distinct(events.column("ride_id")).as_py() == events.num_rows
    assert summary["rows_rejected"] == 0 and set(summary["rejected_by_rule"].values()) == {0}
    assert summary["hours_present"] == list(range(24))
    assert sum(summary["rows_by_hour"].values()) == events.num_rows
    assert summary["success_marker"] is True and summary["schema_ok"] is True
    assert sum(summary["rows_by_city"].values()) == events.num_rows and len(summary["rows_by_city"]) == 8
    keys = list(zip(events.column("requested_at").to_pylist(), events.column("ride_id").to_pylist(), strict=True))
    assert keys == sorted(keys)

    manifest = read_manifest(out)
    assert manifest["code_version"] == IngestParams.code_version
    assert manifest["producer"] == "mltrain_assets.workloads.ingest.workload"
    assert "rejected.parquet" not in manifest["files"]

    # Deterministic: a second ingestion of the same landing writes the same bytes.
    again = normalize_uri(str(tmp_path / "again"))
    ingest_day(landing_uri, "rides", DATE, again)
    assert read_manifest(again)["files"]["events.parquet"]["sha256"] == manifest["files"]["events.parquet"]["sha256"]
    # Idempotent: an already committed version is left alone.
    assert ingest_day(landing_uri, "rides", DATE, out) == summary


def test_rows_breaking_rules_are_quarantined_with_their_rule(landing, tmp_path):
    root, landing_uri, simulated = landing
    _rewrite(_part(root, 13), lambda t: _set(t, "city", 12, "paris"))
    _rewrite(_part(root, 14), lambda t: _set(t, "fare_usd", 5, -3.0))
    # An event filed under this date that happened the day after.
    next_day = dt.datetime(2026, 3, 11, 0, 30, tzinfo=dt.UTC)
    _rewrite(_part(root, 23), lambda t: _set(t, "requested_at", 3, next_day))
    out = normalize_uri(str(tmp_path / "out"))
    summary = ingest_day(landing_uri, "rides", DATE, out)

    assert summary["rejected_by_rule"]["known_city"] == 12
    assert summary["rejected_by_rule"]["non_negative_fare"] == 5
    assert summary["rejected_by_rule"]["event_time_in_date"] == 3
    assert summary["rows_rejected"] == 20
    rejected = read_table(out, "rejected.parquet")
    assert rejected.num_rows == 20
    assert sorted(rejected.column("rule").to_pylist()) == sorted(
        ["known_city"] * 12 + ["non_negative_fare"] * 5 + ["event_time_in_date"] * 3
    )
    assert set(rejected.filter(pc.equal(rejected.column("rule"), "known_city")).column("city").to_pylist()) == {"paris"}
    events = read_table(out, "events.parquet")
    assert "paris" not in set(events.column("city").to_pylist())
    assert pc.min(events.column("fare_usd")).as_py() >= 0
    assert summary["rows"] + summary["rows_rejected"] + summary["duplicates_removed"] == simulated["rows"]


def test_a_day_with_a_wrong_schema_is_rejected_naming_the_columns(landing, tmp_path):
    root, landing_uri, _ = landing

    def break_schema(table: pa.Table) -> pa.Table:
        table = table.drop_columns(["precipitation_mm"]).append_column("surge", pa.array([1.0] * table.num_rows))
        index = table.schema.get_field_index("fare_usd")
        return table.set_column(index, "fare_usd", pc.cast(table.column("fare_usd"), pa.string()))

    _rewrite(_part(root, 7), break_schema)
    out = normalize_uri(str(tmp_path / "out"))
    with pytest.raises(DataRejected) as rejected:
        ingest_day(landing_uri, "rides", DATE, out)
    message = str(rejected.value)
    assert f"rides {DATE}: rule schema: " in message
    assert "hour=07/part-00000.parquet" in message
    assert "missing columns ['precipitation_mm']" in message
    assert "extra columns ['surge']" in message
    assert "fare_usd: string (expected double)" in message
    assert read_manifest(out) is None
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_more_than_one_percent_bad_rows_rejects_the_day(landing, tmp_path):
    root, landing_uri, simulated = landing
    bad = 0
    for hour in (16, 17, 18):
        table = _rewrite(_part(root, hour), lambda t: _set(t, "distance_km", t.num_rows // 2, -1.0))
        bad += table.num_rows // 2
    assert bad > 0.01 * simulated["rows"]
    out = normalize_uri(str(tmp_path / "out"))
    with pytest.raises(DataRejected) as rejected:
        ingest_day(landing_uri, "rides", DATE, out)
    message = str(rejected.value)
    # The rule, its column and the offending value, how many rows, and the hours they are in.
    assert f"rides {DATE}: rule non_negative_distance: distance_km = -1.0 in " in message
    assert f"({bad:,} of " in message and "1% allowed" in message and "hour=16/part-00000.parquet" in message
    assert read_manifest(out) is None


def test_an_empty_landing_day_is_rejected(tmp_path):
    with pytest.raises(DataRejected, match=rf"rides {DATE}: rule files_present: no part files under "):
        ingest_day(normalize_uri(str(tmp_path / "nothing")), "rides", DATE, normalize_uri(str(tmp_path / "out")))


def test_an_unknown_dataset_is_refused_naming_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown landing dataset 'trips'; known: \['interactions', 'rides'\]"):
        ingest_dates(normalize_uri(str(tmp_path / "landing")), "trips", {DATE: normalize_uri(str(tmp_path / "out"))})


def test_cli_ingests_several_dates_and_exits_3_naming_the_rejected_one(tmp_path):
    root = tmp_path / "landing"
    landing_uri = normalize_uri(str(root))
    dates = ["2026-03-10", "2026-03-11", "2026-03-12"]
    for date in dates:
        write_rides_day(landing_uri, date, 5_000)
    _rewrite(_part(root, 9, "2026-03-11"), lambda t: t.drop_columns(["status"]))
    targets = {date: normalize_uri(str(tmp_path / "out" / date)) for date in dates}

    params = IngestParams(dataset="rides", landing_uri=landing_uri, targets=targets)
    result = subprocess.run(params.command(sys.executable), capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == EXIT_DATA_REJECTED, result.stderr
    assert "DATA REJECTED: rides 2026-03-11: rule schema" in result.stderr
    assert "missing columns ['status']" in result.stderr
    assert read_manifest(targets["2026-03-11"]) is None
    for date in ("2026-03-10", "2026-03-12"):
        assert read_manifest(targets[date])["summary"]["rows"] > 4_000


@pytest.mark.slow
def test_landing_and_ingestion_work_on_s3(s3_endpoint):
    prefix = f"s3://mltrain/{uuid.uuid4().hex}"  # the S3 endpoint lives for the whole session
    landing_uri = f"{prefix}/landing"
    simulated = write_rides_day(landing_uri, DATE, 5_000)
    # On S3 the content fingerprint is the objects' ETags, from the listing: nothing is read.
    status = day_status(landing_uri, "rides", DATE)
    assert len(status["files"]) == 24 and bytes_to_hash(status) == 0
    assert all(digest.startswith("etag:") for digest in content_digests(status).values())
    out = f"{prefix}/ride_events/{DATE}/v=test"
    summary = ingest_day(landing_uri, "rides", DATE, out)
    assert summary["success_marker"] is True and summary["hours_present"] == list(range(24))
    assert summary["rows"] == simulated["rows"] - simulated["duplicates"]
    assert read_table(out, "events.parquet").num_rows == summary["rows"]
