"""``when_upstream_ready``: a downstream partition is requested once its upstream partition is materialized,
for any partition (late and backfilled days too), and never before."""

import datetime as dt

from dagster import (
    AssetKey,
    AssetMaterialization,
    AutomationCondition,
    Definitions,
    asset,
    evaluate_automation_conditions,
    instance_for_test,
)

from mltrain_assets.core.automation import when_upstream_ready
from mltrain_assets.core.partitions import daily_partitions

LATEST = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()  # the last complete UTC day
OLD = "2026-03-01"


@asset(partitions_def=daily_partitions)
def landed() -> None: ...


@asset(partitions_def=daily_partitions, deps=[landed], automation_condition=when_upstream_ready())
def features() -> None: ...


DEFS = Definitions(assets=[landed, features])


@asset(
    name="features", partitions_def=daily_partitions, deps=[landed], automation_condition=AutomationCondition.eager()
)
def eager_features() -> None: ...


EAGER_DEFS = Definitions(assets=[landed, eager_features])
FEATURES = AssetKey("features")


def _requested(result) -> set[str]:
    return set(result.get_requested_partitions(FEATURES))


def test_downstream_partition_requested_after_its_upstream_partition_only():
    with instance_for_test() as instance:
        before = evaluate_automation_conditions(defs=DEFS, instance=instance)
        assert before.get_num_requested(FEATURES) == 0, "nothing upstream yet: nothing requested"

        instance.report_runless_asset_event(AssetMaterialization("landed", partition=LATEST))
        latest = evaluate_automation_conditions(defs=DEFS, instance=instance, cursor=before.cursor)
        assert _requested(latest) == {LATEST}

        # Handled: the next evaluation does not request it again.
        again = evaluate_automation_conditions(defs=DEFS, instance=instance, cursor=latest.cursor)
        assert again.get_num_requested(FEATURES) == 0


def test_any_partition_a_late_or_backfilled_day_flows_through():
    """``eager()`` alone requests only the latest time window; an old day would stall."""
    with instance_for_test() as instance:
        first = evaluate_automation_conditions(defs=DEFS, instance=instance)
        assert first.get_num_requested(FEATURES) == 0

        instance.report_runless_asset_event(AssetMaterialization("landed", partition=OLD))
        result = evaluate_automation_conditions(defs=DEFS, instance=instance, cursor=first.cursor)
        assert _requested(result) == {OLD}

    # The same graph with plain eager() leaves that day behind: the difference is the point.
    with instance_for_test() as instance:
        first = evaluate_automation_conditions(defs=EAGER_DEFS, instance=instance)
        instance.report_runless_asset_event(AssetMaterialization("landed", partition=OLD))
        eager = evaluate_automation_conditions(defs=EAGER_DEFS, instance=instance, cursor=first.cursor)
        assert eager.get_num_requested(FEATURES) == 0
