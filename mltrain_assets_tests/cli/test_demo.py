"""`mltrain demo --days N` (cli/demo_backfill.py): which dates it runs, and what it refuses before any work."""

from __future__ import annotations

import os

import pytest

from mltrain_assets.cli.demo_backfill import demo_dates
from mltrain_assets.cli.errors import UsageError, latest_partition
from mltrain_assets.core.pipeline import all_pipelines
from mltrain_assets.workloads.common.dates import shift

LAST = "2026-06-10"


def test_the_last_n_dates_end_at_the_date_oldest_first(mltrain_home):
    pipelines = all_pipelines()
    assert demo_dates(3, LAST, pipelines) == ["2026-06-08", "2026-06-09", LAST]
    assert demo_dates(1, LAST, pipelines) == [LAST]


@pytest.mark.parametrize("days", [0, -2])
def test_fewer_than_one_day_is_refused_naming_the_flag(mltrain_home, days):
    with pytest.raises(UsageError, match=rf"^--days {days}: expected a whole number of days >= 1$"):
        demo_dates(days, LAST, all_pipelines())


def test_a_date_that_is_not_a_partition_yet_is_refused(mltrain_home):
    today = shift(latest_partition(), 1)
    with pytest.raises(UsageError, match=rf"--date {today} is not a partition yet: expected a date up to "):
        demo_dates(2, today, all_pipelines())


def test_days_whose_inputs_reach_before_the_first_partition_are_refused_with_how_many_fit(mltrain_home, monkeypatch):
    monkeypatch.setenv("MLTRAIN_PARTITIONS_START", "2026-04-01")
    pipelines = all_pipelines()
    # The longest landing window decides: its first day for the oldest date must be a partition.
    widest = min(pipelines, key=lambda p: p.landing_window.first(LAST))
    most = len([d for d in range(1, 400) if widest.landing_window.first(shift(LAST, 1 - d)) >= "2026-04-01"])
    assert most > 1
    assert demo_dates(most, LAST, pipelines)[0] == shift(LAST, 1 - most)
    with pytest.raises(UsageError) as refused:
        demo_dates(most + 1, LAST, pipelines)
    message = refused.value.message
    assert message.startswith(f"--days {most + 1} up to {LAST} starts at {shift(LAST, -most)}, whose {widest.name} ")
    assert f"expected --days from 1 to {most} " in message
    assert f"MLTRAIN_PARTITIONS_START={widest.landing_window.first(shift(LAST, -most))} or earlier" in message


def test_a_run_read_back_from_the_instance_says_what_executing_it_said(mltrain_home):
    """What the demo prints for a run the daemon launched equals what it prints for a run it executed itself."""
    from dagster import DagsterInstance

    from mltrain_assets.cli import demo
    from mltrain_assets.cli.demo_backfill import outcome_of_run
    from mltrain_assets.simulate import simulate

    first = shift(LAST, -1)
    simulate("rides", os.environ["MLTRAIN_LANDING_URI"], first, LAST, volume=2_000)
    landed = demo.execute("ride_events_job", "ride_events", partition_range=(first, LAST), assets=["ride_events"])
    missing = demo.execute("ride_events_job", "ride_events", partition_key=shift(LAST, 1), assets=["ride_events"])
    assert landed.success and not missing.success and "no _SUCCESS marker" in missing.error
    instance = DagsterInstance.get()
    for executed, partition in ((landed, f"{first}...{LAST}"), (missing, shift(LAST, 1))):
        read = outcome_of_run(instance, instance.get_run_record_by_id(executed.run_id))
        assert (read.run_id, read.success, read.error) == (executed.run_id, executed.success, executed.error)
        assert read.materializations == executed.materializations and read.checks == executed.checks
        assert read.check_descriptions == executed.check_descriptions
        assert read.label == f"ride_events {partition}" and read.seconds > 0
