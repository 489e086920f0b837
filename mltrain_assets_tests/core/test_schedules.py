"""The daily fallback schedule: skips with a reason until yesterday landed, and when it is already ingested."""

import datetime as dt

from dagster import AssetMaterialization, DefaultScheduleStatus, build_schedule_context, instance_for_test

from mltrain_assets.definitions import defs
from mltrain_assets.resources.storage import ArtifactStorage
from mltrain_assets.simulate import simulate

TICK = dt.datetime(2026, 1, 5, 3, 30, tzinfo=dt.UTC)
YESTERDAY = "2026-01-04"


def test_schedule_skips_until_landed_then_requests_yesterday(mltrain_home):
    storage = ArtifactStorage(base_uri=f"file://{mltrain_home}/storage", landing_uri=f"file://{mltrain_home}/landing")
    schedule = defs.resolve_schedule_def("rides_daily_schedule")
    assert schedule.cron_schedule == "30 3 * * *" and schedule.execution_timezone == "UTC"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
    with instance_for_test() as instance:
        context = build_schedule_context(
            instance=instance,
            scheduled_execution_time=TICK,
            resources={"storage": storage},
            repository_def=defs.get_repository_def(),
        )
        result = schedule.evaluate_tick(context)
        assert result.skip_message.startswith(f"rides {YESTERDAY} has not landed: no _SUCCESS marker at")
        assert "(0/24 hourly buckets present)" in result.skip_message

        simulate("rides", storage.landing_uri, YESTERDAY, YESTERDAY, volume=2_000)
        result = schedule.evaluate_tick(context)
        assert [r.partition_key for r in result.run_requests] == [YESTERDAY]
        assert result.run_requests[0].run_key == f"rides:{YESTERDAY}:schedule"

        # The landing sensor got there first: the schedule does not run it again.
        instance.report_runless_asset_event(AssetMaterialization("ride_events", partition=YESTERDAY))
        result = schedule.evaluate_tick(context)
        assert not result.run_requests
        assert result.skip_message == f"ride_events {YESTERDAY} is already materialized (the landing sensor ran it)"


def test_every_daily_fallback_schedule_is_on_by_default():
    """The README calls them the fallback: a fresh install runs them (a tick with nothing due skips with a reason)."""
    for name in ("rides_daily_schedule", "interactions_daily_schedule"):
        assert defs.resolve_schedule_def(name).default_status == DefaultScheduleStatus.RUNNING, name
