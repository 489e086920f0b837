"""Declarative automation: downstream steps run when their inputs are ready, without a manual step."""

from dagster import AssetSelection, AutomationCondition, AutomationConditionSensorDefinition, DefaultSensorStatus


def when_upstream_ready() -> AutomationCondition:
    """Like ``eager()``, but for any partition: late and out-of-order days flow through too.

    Gates are enforced per partition inside each asset (``require_gates_passed``): the
    checks here are not partitioned, so ``all_deps_blocking_checks_passed`` would let one
    bad day block every other day.
    """
    return (
        AutomationCondition.eager()
        .without(AutomationCondition.in_latest_time_window())
        .with_label("eager, any partition")
    )


# Evaluates every asset's condition; on by default so a landed day flows through without a manual step.
automation_sensor = AutomationConditionSensorDefinition(
    "mltrain_automation_sensor",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=10,
    description="Starts downstream steps (features, training, registration, inference) when their inputs are ready.",
)
