"""Landing sensors plan one run per landed day, never twice, and again only when the content changed."""

import datetime as dt
import json
import os
import subprocess
import sys

import pytest
from dagster import AssetMaterialization, DagsterInstance, build_sensor_context

from mltrain_assets.core.partitions import DEFAULT_PARTITIONS_START, PARTITIONS_START_DATE, partitions_start_date
from mltrain_assets.core.sensors import plan_landing_runs
from mltrain_assets.definitions import defs
from mltrain_assets.landing import LandedDay, landed_days
from mltrain_assets.resources.storage import ArtifactStorage
from mltrain_assets.simulate import simulate

TODAY = dt.date(2026, 1, 10)
RECENT = [(dt.datetime.now(dt.UTC).date() - dt.timedelta(days=k)).isoformat() for k in (3, 2)]


def _days(*pairs):
    return [LandedDay("rides", date, marker) for date, marker in pairs]


def test_each_day_once_with_dataset_date_run_key():
    requests, cursor = plan_landing_runs("rides", _days(("2026-01-01", "a"), ("2026-01-02", "b")), {}, today=TODAY)
    assert [r.run_key for r in requests] == ["rides:2026-01-01", "rides:2026-01-02"]
    assert [r.partition_key for r in requests] == ["2026-01-01", "2026-01-02"]
    again, _ = plan_landing_runs("rides", _days(("2026-01-01", "a"), ("2026-01-02", "b")), cursor, today=TODAY)
    assert again == []


def test_late_and_out_of_order_days_and_changed_content():
    _, cursor = plan_landing_runs("rides", _days(("2026-01-03", "c")), {}, today=TODAY)
    requests, cursor = plan_landing_runs("rides", _days(("2026-01-01", "a"), ("2026-01-03", "c")), cursor, today=TODAY)
    assert [r.run_key for r in requests] == ["rides:2026-01-01"]  # the late day
    requests, _ = plan_landing_runs("rides", _days(("2026-01-01", "a"), ("2026-01-03", "c2")), cursor, today=TODAY)
    assert [r.run_key for r in requests] == ["rides:2026-01-03:c2"]  # re-landed with other content


def test_days_beyond_the_lookback_are_left_alone():
    today = dt.date(2026, 6, 1)
    requests, cursor = plan_landing_runs("rides", _days(("2025-06-01", "a"), ("2026-05-20", "b")), {}, today=today)
    assert [r.run_key for r in requests] == ["rides:2026-05-20"]
    assert "2025-06-01" not in cursor


def test_days_before_the_first_partition_are_left_alone():
    start = dt.date.fromisoformat(PARTITIONS_START_DATE)
    before, first = (start - dt.timedelta(days=1)).isoformat(), start.isoformat()
    requests, _ = plan_landing_runs("rides", _days((before, "a"), (first, "b")), {}, today=start + dt.timedelta(days=5))
    assert [r.partition_key for r in requests] == [first]


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
        "r, _ = plan_landing_runs('rides', [LandedDay('rides', d, d) for d in ('2026-02-28', '2026-03-01')], {}, "
        "today=dt.date(2026, 3, 5)); print([x.partition_key for x in r])"
    )
    env = {**os.environ, "MLTRAIN_PARTITIONS_START": "2026-03-01", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["2026-03-01", "['2026-03-01']"]


def test_days_already_ingested_are_adopted_not_rerun():
    requests, cursor = plan_landing_runs(
        "rides", _days(("2026-01-01", "a"), ("2026-01-02", "b")), {}, {"2026-01-01"}, today=TODAY
    )
    assert [r.run_key for r in requests] == ["rides:2026-01-02"]
    assert cursor == {"2026-01-01": "a", "2026-01-02": "b"}


def _tick(sensor, instance, storage, cursor=None):
    return sensor(build_sensor_context(instance=instance, cursor=cursor, resources={"storage": storage}))


def test_sensor_ticks_once_per_landed_day_and_again_only_on_changed_content(mltrain_home):
    landing = f"file://{mltrain_home}/landing"
    simulate("rides", landing, RECENT[0], RECENT[1], volume=2_000)
    storage = ArtifactStorage(base_uri=f"file://{mltrain_home}/storage", landing_uri=landing)
    sensor = defs.resolve_sensor_def("rides_landing_sensor")
    with DagsterInstance.ephemeral() as instance:
        first = _tick(sensor, instance, storage)
        assert sorted(r.run_key for r in first.run_requests) == [f"rides:{d}" for d in RECENT]
        assert all(r.tags["mltrain/trigger"] == "landing_sensor" for r in first.run_requests)
        cursor = json.loads(first.cursor)
        assert set(cursor) == set(RECENT)

        # The next tick, with the cursor the first one left: nothing new landed, no run.
        second = _tick(sensor, instance, storage, first.cursor)
        assert second.run_requests == []
        assert json.loads(second.cursor) == cursor

        # Rewriting a day with identical content keeps its marker: still no run.
        simulate("rides", landing, RECENT[1], RECENT[1], volume=2_000)
        assert {d.marker_sha256 for d in landed_days(landing, "rides")} == set(cursor.values())
        third = _tick(sensor, instance, storage, second.cursor)
        assert third.run_requests == []

        # Re-landed with other content: a new marker, one new run with its own key.
        simulate("rides", landing, RECENT[1], RECENT[1], volume=2_500)
        fourth = _tick(sensor, instance, storage, third.cursor)
        new_marker = json.loads(fourth.cursor)[RECENT[1]]
        assert new_marker != cursor[RECENT[1]]
        assert [r.run_key for r in fourth.run_requests] == [f"rides:{RECENT[1]}:{new_marker}"]
        assert _tick(sensor, instance, storage, fourth.cursor).run_requests == []


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
