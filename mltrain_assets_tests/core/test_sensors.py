"""Landing sensors plan one run per landed day, never twice, and again only when the content changed;
malformed and out-of-range folders are named and never stop the other days."""

import datetime as dt
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import AssetMaterialization, DagsterInstance, build_sensor_context

from mltrain_assets.core.ingestion import LANDING_FINGERPRINT, landing_fingerprint
from mltrain_assets.core.partitions import DEFAULT_PARTITIONS_START, PARTITIONS_START_DATE, partitions_start_date
from mltrain_assets.core.sensors import ContentCheck, describe_skipped, landing_sensor, plan_landing_runs
from mltrain_assets.definitions import defs
from mltrain_assets.landing import LandedDay, day_status, scan_landing
from mltrain_assets.resources.storage import ArtifactStorage
from mltrain_assets.simulate import simulate

TODAY = dt.date(2026, 1, 10)
UTC_TODAY = dt.datetime.now(dt.UTC).date()
RECENT = [(UTC_TODAY - dt.timedelta(days=k)).isoformat() for k in (3, 2)]


def _days(*pairs):
    """Landed days with listing fingerprint ``fp`` (and a marker hash of their own)."""
    return [LandedDay("rides", date, f"marker-{fp}", fp) for date, fp in pairs]


def test_each_day_once_with_dataset_date_run_key():
    plan = plan_landing_runs("rides", _days(("2026-01-01", "a"), ("2026-01-02", "b")), {}, today=TODAY)
    assert [r.run_key for r in plan.requests] == ["rides:2026-01-01", "rides:2026-01-02"]
    assert [r.partition_key for r in plan.requests] == ["2026-01-01", "2026-01-02"]
    again = plan_landing_runs("rides", _days(("2026-01-01", "a"), ("2026-01-02", "b")), plan.cursor, today=TODAY)
    assert again.requests == [] and again.notes == []


def test_late_and_out_of_order_days_and_changed_content():
    cursor = plan_landing_runs("rides", _days(("2026-01-03", "c")), {}, today=TODAY).cursor
    plan = plan_landing_runs("rides", _days(("2026-01-01", "a"), ("2026-01-03", "c")), cursor, today=TODAY)
    assert [r.run_key for r in plan.requests] == ["rides:2026-01-01"]  # the late day
    plan = plan_landing_runs("rides", _days(("2026-01-01", "a"), ("2026-01-03", "c2")), plan.cursor, today=TODAY)
    assert [r.run_key for r in plan.requests] == ["rides:2026-01-03:c2"]  # re-landed with other content


def test_a_changed_listing_is_a_run_only_if_the_content_changed():
    """The content check (the ingestion's own fingerprint) decides: a touch is silent, a correction is a run."""
    cursor = plan_landing_runs("rides", _days(("2026-01-03", "c")), {}, today=TODAY).cursor
    contents = {
        "c-touched": ContentCheck("content-1", already_ingested=True),
        "c-fixed": ContentCheck("content-2", False),
    }
    checked = []

    def check(day):
        checked.append(day.date)
        return contents[day.fingerprint]

    touched = plan_landing_runs("rides", _days(("2026-01-03", "c-touched")), cursor, today=TODAY, content_check=check)
    assert touched.requests == [] and touched.cursor["2026-01-03"] == {"listing": "c-touched", "content": "content-1"}
    fixed = plan_landing_runs(
        "rides", _days(("2026-01-03", "c-fixed")), touched.cursor, today=TODAY, content_check=check
    )
    assert [r.run_key for r in fixed.requests] == ["rides:2026-01-03:content-2"]
    assert fixed.requests[0].tags["mltrain/landing_fingerprint"] == "content-2"
    assert checked == ["2026-01-03", "2026-01-03"], "only a changed listing is looked at closer"
    # Over this tick's budget: the day waits (cursor unchanged, named), and is checked next tick.
    deferred = plan_landing_runs(
        "rides", _days(("2026-01-03", "c2")), fixed.cursor, today=TODAY, content_check=lambda d: None
    )
    assert deferred.requests == [] and deferred.cursor == fixed.cursor
    assert describe_skipped(deferred.notes) == "date=2026-01-03: re-landed; its content is checked next tick"


def test_a_cursor_of_marker_hashes_is_adopted_without_rerunning():
    """Cursors written before listing fingerprints hold date -> marker hash: an unchanged marker is no run."""
    days = _days(("2026-01-01", "a"), ("2026-01-02", "b"))
    plan = plan_landing_runs("rides", days, {"2026-01-01": "marker-a", "2026-01-02": "old-marker"}, today=TODAY)
    assert [r.run_key for r in plan.requests] == ["rides:2026-01-02:b"]
    assert plan.cursor["2026-01-01"] == {"listing": "a", "content": None}


def test_days_beyond_the_lookback_are_left_alone():
    today = dt.date(2026, 6, 1)
    plan = plan_landing_runs("rides", _days(("2025-06-01", "a"), ("2026-05-20", "b")), {}, today=today)
    assert [r.run_key for r in plan.requests] == ["rides:2026-05-20"]
    assert "2025-06-01" not in plan.cursor


def test_days_before_the_first_partition_or_after_the_last_are_named_not_requested():
    start = dt.date.fromisoformat(PARTITIONS_START_DATE)
    today = start + dt.timedelta(days=5)
    before, first = (start - dt.timedelta(days=1)).isoformat(), start.isoformat()
    days = _days((before, "a"), (first, "b"), (today.isoformat(), "c"))
    plan = plan_landing_runs("rides", days, {}, today=today)
    assert [r.partition_key for r in plan.requests] == [first]
    assert describe_skipped(plan.notes) == (
        f"date={before}: before the first partition {first} (MLTRAIN_PARTITIONS_START); "
        f"date={today}: after the last partition {today - dt.timedelta(days=1)} (yesterday, UTC): not a partition yet"
    )


def test_the_first_partition_is_a_setting(monkeypatch):
    monkeypatch.delenv("MLTRAIN_PARTITIONS_START", raising=False)
    assert partitions_start_date() == DEFAULT_PARTITIONS_START == "2026-01-01"
    monkeypatch.setenv("MLTRAIN_PARTITIONS_START", "March")
    with pytest.raises(ValueError, match=r"MLTRAIN_PARTITIONS_START='March' is not a date \(YYYY-MM-DD\)"):
        partitions_start_date()
    # Every process reads it when it loads the definitions: the partitions and the sensors' horizon follow it.
    code = (
        "from mltrain_assets.core.partitions import daily_partitions; from mltrain_assets.core.sensors import "
        "plan_landing_runs; from mltrain_assets.landing import LandedDay; import datetime as dt; "
        "print(daily_partitions.start.date()); "
        "r = plan_landing_runs('rides', [LandedDay('rides', d, d, d) for d in ('2026-02-28', '2026-03-01')], {}, "
        "today=dt.date(2026, 3, 5)).requests; print([x.partition_key for x in r])"
    )
    env = {**os.environ, "MLTRAIN_PARTITIONS_START": "2026-03-01", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["2026-03-01", "['2026-03-01']"]


def test_days_already_ingested_are_adopted_not_rerun():
    plan = plan_landing_runs("rides", _days(("2026-01-01", "a"), ("2026-01-02", "b")), {}, {"2026-01-01"}, today=TODAY)
    assert [r.run_key for r in plan.requests] == ["rides:2026-01-02"]
    assert plan.cursor == {
        "2026-01-01": {"listing": "a", "content": None},
        "2026-01-02": {"listing": "b", "content": None},
    }


def _tick(sensor, instance, storage, cursor=None):
    return sensor(build_sensor_context(instance=instance, cursor=cursor, resources={"storage": storage}))


def _ingested(instance, landing, *dates):
    """What the ingestion asset records: each partition's materialization with its landing fingerprint."""
    for date in dates:
        fingerprint = landing_fingerprint(day_status(landing, "rides", date))
        instance.report_runless_asset_event(
            AssetMaterialization("ride_events", partition=date, metadata={LANDING_FINGERPRINT: fingerprint})
        )


def _deliver(path, table):
    """A producer writing plain (uncompressed, no dictionary) parquet: fixing one value keeps the size."""
    pq.write_table(table, path, compression="none", use_dictionary=False)


def test_sensor_ticks_once_per_landed_day_and_again_only_on_changed_content(mltrain_home):
    landing = f"file://{mltrain_home}/landing"
    simulate("rides", landing, RECENT[0], RECENT[1], volume=2_000)
    part = day_status(landing, "rides", RECENT[1])["uri"].removeprefix("file://") + "/hour=12/part-00000.parquet"
    delivered = pq.read_table(part)
    _deliver(part, delivered)
    storage = ArtifactStorage(base_uri=f"file://{mltrain_home}/storage", landing_uri=landing)
    sensor = defs.resolve_sensor_def("rides_landing_sensor")
    with DagsterInstance.ephemeral() as instance:
        first = _tick(sensor, instance, storage)
        assert sorted(r.run_key for r in first.run_requests) == [f"rides:{d}" for d in RECENT]
        assert all(r.tags["mltrain/trigger"] == "landing_sensor" for r in first.run_requests)
        cursor = json.loads(first.cursor)
        assert set(cursor) == set(RECENT)
        _ingested(instance, landing, *RECENT)

        # The next tick, with the cursor the first one left: nothing new landed, no run.
        second = _tick(sensor, instance, storage, first.cursor)
        assert second.run_requests == []
        assert json.loads(second.cursor) == cursor

        # Rewriting a day with identical content: its listing moved (mtimes), its content did not: no run.
        simulate("rides", landing, RECENT[1], RECENT[1], volume=2_000)
        _deliver(part, delivered)
        third = _tick(sensor, instance, storage, second.cursor)
        assert third.run_requests == []
        assert json.loads(third.cursor)[RECENT[1]]["listing"] != cursor[RECENT[1]]["listing"]

        # A corrected re-delivery: one value fixed, the same file sizes, the same _SUCCESS: a new run.
        fares = delivered.column("fare_usd").to_pylist()
        fixed = delivered.set_column(
            delivered.schema.get_field_index("fare_usd"),
            delivered.schema.field("fare_usd"),
            pa.array([fares[1], *fares[1:]], pa.float64()),
        )
        size, marker = os.path.getsize(part), day_status(landing, "rides", RECENT[1])["marker_sha256"]
        _deliver(part, fixed)
        assert os.path.getsize(part) == size and day_status(landing, "rides", RECENT[1])["marker_sha256"] == marker
        fourth = _tick(sensor, instance, storage, third.cursor)
        fingerprint = landing_fingerprint(day_status(landing, "rides", RECENT[1]))
        assert [r.run_key for r in fourth.run_requests] == [f"rides:{RECENT[1]}:{fingerprint}"]
        assert fourth.run_requests[0].partition_key == RECENT[1]
        assert _tick(sensor, instance, storage, fourth.cursor).run_requests == []


def test_malformed_and_out_of_range_folders_are_named_and_never_stop_other_days(mltrain_home):
    landing = f"file://{mltrain_home}/landing"
    simulate("rides", landing, RECENT[0], RECENT[1], volume=2_000)
    root = mltrain_home / "landing" / "rides"
    no_marker = (UTC_TODAY - dt.timedelta(days=4)).isoformat()
    for folder in ("date=2026-02-30", "date=latest", "date=2025-12-31", f"date={UTC_TODAY}", f"date={no_marker}"):
        (root / folder / "hour=00").mkdir(parents=True)
        (root / folder / "hour=00" / "part-00000.parquet").write_bytes(b"")
        if folder != f"date={no_marker}":
            (root / folder / "_SUCCESS").write_text("{}")
    (root / "notes").mkdir()
    (root / "_temporary").mkdir()  # hidden (a producer's scratch): not even named
    (root / "date=2026-02-30" / "part-at-top.parquet").write_bytes(b"")

    scan = scan_landing(landing, "rides")
    assert [d.date for d in scan.days] == ["2025-12-31", *RECENT, str(UTC_TODAY)]
    storage = ArtifactStorage(base_uri=f"file://{mltrain_home}/storage", landing_uri=landing)
    sensor = defs.resolve_sensor_def("rides_landing_sensor")
    with DagsterInstance.ephemeral() as instance:
        first = _tick(sensor, instance, storage)
        assert sorted(r.run_key for r in first.run_requests) == [f"rides:{d}" for d in RECENT]
        second = _tick(sensor, instance, storage, first.cursor)
    assert second.run_requests == []
    reason = second.skip_reason.skip_message
    assert reason.startswith(f"no new rides days under {landing}; skipped ")
    for named in (
        "date=2026-02-30: '2026-02-30' is not a valid date",
        "date=latest: 'latest' is not a valid date",
        "date=2025-12-31: before the first partition 2026-01-01 (MLTRAIN_PARTITIONS_START)",
        f"date={UTC_TODAY}: after the last partition {UTC_TODAY - dt.timedelta(days=1)} (yesterday, UTC)",
        f"date={no_marker}: no _SUCCESS marker yet (1/24 hourly buckets)",
        "notes: not a date=YYYY-MM-DD folder",
    ):
        assert named in reason, reason
    assert "_temporary" not in reason


def test_sensor_adopts_days_ingested_by_another_run(mltrain_home):
    """A day the instance already holds (demo, backfill, schedule) is recorded in the cursor, not rerun."""
    landing = f"file://{mltrain_home}/landing"
    simulate("rides", landing, RECENT[0], RECENT[1], volume=2_000)
    storage = ArtifactStorage(base_uri=f"file://{mltrain_home}/storage", landing_uri=landing)
    sensor = defs.resolve_sensor_def("rides_landing_sensor")
    with DagsterInstance.ephemeral() as instance:
        instance.report_runless_asset_event(AssetMaterialization("ride_events", partition=RECENT[0]))
        first = _tick(sensor, instance, storage)
        assert [r.run_key for r in first.run_requests] == [f"rides:{RECENT[1]}"]
        assert set(json.loads(first.cursor)) == set(RECENT)
        assert _tick(sensor, instance, storage, first.cursor).run_requests == []


def test_the_landing_sensors_interval_is_a_setting(monkeypatch):
    job = defs.resolve_job_def("ride_events_job")
    monkeypatch.delenv("MLTRAIN_LANDING_SENSOR_INTERVAL_S", raising=False)
    assert landing_sensor("rides", "ride_events", job).minimum_interval_seconds == 30
    monkeypatch.setenv("MLTRAIN_LANDING_SENSOR_INTERVAL_S", "5")
    assert landing_sensor("rides", "ride_events", job).minimum_interval_seconds == 5
