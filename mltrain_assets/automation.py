"""Declarative automation: downstream steps run when their inputs are ready, without a manual step."""

from dagster import AutomationCondition


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
