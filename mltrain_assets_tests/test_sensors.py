"""Landing sensors plan one run per landed day, never twice, and again only when the content changed."""

import datetime as dt
import json

from dagster import DagsterInstance, build_schedule_context, build_sensor_context, instance_for_test

from mltrain_assets.definitions import defs
from mltrain_assets.landing import LandedDay, landed_days
from mltrain_assets.resources.storage import ArtifactStorage
from mltrain_assets.schedules import rides_daily_schedule
from mltrain_assets.sensors import plan_landing_runs, rides_landing_sensor
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


def test_days_already_ingested_are_adopted_not_rerun():
    requests, cursor = plan_landing_runs(
        "rides", _days(("2026-01-01", "a"), ("2026-01-02", "b")), {}, {"2026-01-01"}, today=TODAY
    )
    assert [r.run_key for r in requests] == ["rides:2026-01-02"]
    assert cursor == {"2026-01-01": "a", "2026-01-02": "b"}


def test_sensor_reads_the_landing_zone_and_keeps_its_cursor(mltrain_home):
    landing = f"file://{mltrain_home}/landing"
    simulate("rides", landing, RECENT[0], RECENT[1], volume=2_000)
    storage = ArtifactStorage(base_uri=f"file://{mltrain_home}/storage", landing_uri=landing)
    with DagsterInstance.ephemeral() as instance:
        context = build_sensor_context(instance=instance, resources={"storage": storage})
        result = rides_landing_sensor(context)
        assert sorted(r.run_key for r in result.run_requests) == [f"rides:{d}" for d in RECENT]
        cursor = json.loads(result.cursor)
        assert set(cursor) == set(RECENT)
        second = rides_landing_sensor(
            build_sensor_context(instance=instance, cursor=result.cursor, resources={"storage": storage})
        )
        assert not second.run_requests
        # Rewriting a day with identical content keeps its marker: no new run.
        simulate("rides", landing, RECENT[1], RECENT[1], volume=2_000)
        assert {d.marker_sha256 for d in landed_days(landing, "rides")} == set(cursor.values())


def test_schedule_skips_with_reason_when_day_has_not_landed(mltrain_home):
    import datetime as dt

    storage = ArtifactStorage(base_uri=f"file://{mltrain_home}/storage", landing_uri=f"file://{mltrain_home}/landing")
    with instance_for_test() as instance:
        context = build_schedule_context(
            instance=instance,
            scheduled_execution_time=dt.datetime(2026, 1, 5, 3, 30, tzinfo=dt.UTC),
            resources={"storage": storage},
            repository_def=defs.get_repository_def(),
        )
        result = rides_daily_schedule.evaluate_tick(context)
        assert result.skip_message.startswith("rides 2026-01-04 has not landed: no _SUCCESS marker at")
        simulate("rides", storage.landing_uri, "2026-01-04", "2026-01-04", volume=2_000)
        result = rides_daily_schedule.evaluate_tick(context)
        assert [r.partition_key for r in result.run_requests] == ["2026-01-04"]
