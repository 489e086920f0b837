"""Automation: a landed day's own step runs for any partition; windowed steps downstream run for the
partitions of the automation lookback only, so a late or re-landed day re-runs a bounded set."""

import datetime as dt

import pytest
from dagster import (
    AssetDep,
    AssetKey,
    AssetMaterialization,
    AutomationCondition,
    Definitions,
    TimeWindowPartitionMapping,
    asset,
    evaluate_automation_conditions,
    instance_for_test,
)

from mltrain_assets.core.automation import (
    DEFAULT_LOOKBACK_DAYS,
    automation_lookback_days,
    when_landed_day_ready,
    when_upstream_ready,
)
from mltrain_assets.core.partitions import daily_partitions

TODAY = dt.datetime.now(dt.UTC).date()
LATEST = (TODAY - dt.timedelta(days=1)).isoformat()  # the last complete UTC day
OLD = "2026-03-01"
WINDOW = 35


def _day(days_before_latest: int) -> str:
    return (TODAY - dt.timedelta(days=1 + days_before_latest)).isoformat()


@asset(partitions_def=daily_partitions)
def landed() -> None: ...


@asset(partitions_def=daily_partitions, deps=[landed], automation_condition=when_landed_day_ready())
def aggregates() -> None: ...


@asset(partitions_def=daily_partitions, deps=[landed], automation_condition=when_upstream_ready())
def features() -> None: ...


@asset(
    partitions_def=daily_partitions,
    deps=[AssetDep(aggregates, partition_mapping=TimeWindowPartitionMapping(start_offset=-(WINDOW - 1)))],
    automation_condition=when_upstream_ready(3),
)
def windowed() -> None: ...


@asset(
    name="windowed",
    partitions_def=daily_partitions,
    deps=[AssetDep(aggregates, partition_mapping=TimeWindowPartitionMapping(start_offset=-(WINDOW - 1)))],
    automation_condition=when_landed_day_ready(),
)
def windowed_any_partition() -> None: ...


DEFS = Definitions(assets=[landed, aggregates, features])
WINDOWED_DEFS = Definitions(assets=[landed, aggregates, windowed])
UNBOUNDED_DEFS = Definitions(assets=[landed, aggregates, windowed_any_partition])
FEATURES, AGGREGATES, WINDOWED = AssetKey("features"), AssetKey("aggregates"), AssetKey("windowed")


@asset(
    name="features", partitions_def=daily_partitions, deps=[landed], automation_condition=AutomationCondition.eager()
)
def eager_features() -> None: ...


EAGER_DEFS = Definitions(assets=[landed, eager_features])


def _land(instance, asset_name: str, *days: str) -> None:
    for day in days:
        instance.report_runless_asset_event(AssetMaterialization(asset_name, partition=day))


def test_downstream_partition_requested_after_its_upstream_partition_only():
    with instance_for_test() as instance:
        before = evaluate_automation_conditions(defs=DEFS, instance=instance)
        assert before.get_num_requested(FEATURES) == 0, "nothing upstream yet: nothing requested"

        _land(instance, "landed", LATEST)
        latest = evaluate_automation_conditions(defs=DEFS, instance=instance, cursor=before.cursor)
        assert set(latest.get_requested_partitions(FEATURES)) == {LATEST}
        assert set(latest.get_requested_partitions(AGGREGATES)) == {LATEST}

        # Handled: the next evaluation does not request it again.
        again = evaluate_automation_conditions(defs=DEFS, instance=instance, cursor=latest.cursor)
        assert again.get_num_requested(FEATURES) == 0


def test_a_late_day_gets_its_own_step_and_downstream_only_within_the_lookback():
    late_recent, late_old = _day(1), OLD
    with instance_for_test() as instance:
        first = evaluate_automation_conditions(defs=DEFS, instance=instance)
        _land(instance, "landed", late_recent, late_old)
        result = evaluate_automation_conditions(defs=DEFS, instance=instance, cursor=first.cursor)
        # The day's own step, whatever its age; the downstream step only inside the lookback.
        assert set(result.get_requested_partitions(AGGREGATES)) == {late_recent, late_old}
        assert set(result.get_requested_partitions(FEATURES)) == {late_recent}

    # Plain eager() leaves even a recent late day's own step behind: only the latest window runs.
    with instance_for_test() as instance:
        first = evaluate_automation_conditions(defs=EAGER_DEFS, instance=instance)
        _land(instance, "landed", late_recent)
        eager = evaluate_automation_conditions(defs=EAGER_DEFS, instance=instance, cursor=first.cursor)
        assert eager.get_num_requested(FEATURES) == 0


def _relanded_day_requests(defs) -> set[str]:
    """Steady state over 40 days, then day LATEST-10 re-lands: which windowed partitions are requested.

    The day's own step and the windowed partitions behind it are requested in the same evaluation
    (one run, in dependency order).
    """
    days = [_day(k) for k in range(40, -1, -1)]
    with instance_for_test() as instance:
        _land(instance, "landed", *days)
        _land(instance, "aggregates", *days)
        _land(instance, "windowed", *days)
        settled = evaluate_automation_conditions(defs=defs, instance=instance)
        assert settled.get_num_requested(WINDOWED) == 0
        relanded = _day(10)
        _land(instance, "landed", relanded)
        result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=settled.cursor)
        assert set(result.get_requested_partitions(AGGREGATES)) == {relanded}
        return set(result.get_requested_partitions(WINDOWED))


def test_a_relanded_day_reruns_at_most_the_lookback_of_a_windowed_asset():
    bounded = _relanded_day_requests(WINDOWED_DEFS)
    assert bounded == {_day(2), _day(1), _day(0)}
    # Without the lookback, partitions whose 35-day window holds the day re-run far beyond it.
    unbounded = _relanded_day_requests(UNBOUNDED_DEFS)
    assert unbounded > bounded and len(unbounded) > 3


def test_the_lookback_setting_is_checked(monkeypatch):
    monkeypatch.delenv("MLTRAIN_AUTOMATION_LOOKBACK_DAYS", raising=False)
    assert automation_lookback_days() == DEFAULT_LOOKBACK_DAYS
    monkeypatch.setenv("MLTRAIN_AUTOMATION_LOOKBACK_DAYS", "7")
    assert automation_lookback_days() == 7
    assert when_upstream_ready().label == "eager, last 7 days"
    for bad in ("0", "three", "-2"):
        monkeypatch.setenv("MLTRAIN_AUTOMATION_LOOKBACK_DAYS", bad)
        with pytest.raises(ValueError, match=rf"MLTRAIN_AUTOMATION_LOOKBACK_DAYS='{bad}': expected a whole number"):
            automation_lookback_days()
