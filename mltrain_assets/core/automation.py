"""Declarative automation: downstream steps run when their inputs are ready, without a manual step.

Two conditions, by what a landed day costs downstream:

- ``when_landed_day_ready``: a landed day's own step (its city-hour aggregates) runs for any
  partition, late and out-of-order days too: one day in, one partition out.
- ``when_upstream_ready``: every other downstream step runs for the partitions of the last
  ``MLTRAIN_AUTOMATION_LOOKBACK_DAYS`` days only (the automation lookback, default 3). A day
  re-landed or arriving late re-runs at most that many partitions of each windowed asset (and
  of each city model behind them) instead of every partition whose trailing window holds it;
  older partitions are left to an explicit backfill (``mltrain backfill``), which the UI shows
  as out of date.
"""

import datetime as dt
import os

from dagster import AssetSelection, AutomationCondition, AutomationConditionSensorDefinition, DefaultSensorStatus

LOOKBACK_ENV = "MLTRAIN_AUTOMATION_LOOKBACK_DAYS"
DEFAULT_LOOKBACK_DAYS = 3


def automation_lookback_days() -> int:
    """``$MLTRAIN_AUTOMATION_LOOKBACK_DAYS`` (a whole number of days >= 1), else ``DEFAULT_LOOKBACK_DAYS``."""
    value = os.environ.get(LOOKBACK_ENV, "").strip() or str(DEFAULT_LOOKBACK_DAYS)
    try:
        days = int(value)
    except ValueError:
        days = 0
    if days < 1:
        raise ValueError(f"{LOOKBACK_ENV}={value!r}: expected a whole number of days >= 1")
    return days


# Gates are enforced per partition by the reference IO manager: the checks here are not
# partitioned, so ``all_deps_blocking_checks_passed`` would let one bad day block every other.
# (A value, not a function: its inferred type is the ``AndAutomationCondition`` that has ``with_label``.)
_EAGER_ANY_PARTITION = AutomationCondition.eager().without(AutomationCondition.in_latest_time_window())


def when_landed_day_ready() -> AutomationCondition:
    """Like ``eager()``, but for any partition: a late or re-landed day's own step runs too."""
    return _EAGER_ANY_PARTITION.with_label("eager, any partition")


def when_upstream_ready(lookback_days: int | None = None) -> AutomationCondition:
    """Like ``eager()``, for the partitions of the last ``lookback_days`` days (the automation lookback)."""
    days = lookback_days or automation_lookback_days()
    within = AutomationCondition.in_latest_time_window(lookback_delta=dt.timedelta(days=days))
    return (_EAGER_ANY_PARTITION & within).with_label(f"eager, last {days} days")


# Evaluates every asset's condition; on by default so a landed day flows through without a manual step.
automation_sensor = AutomationConditionSensorDefinition(
    "mltrain_automation_sensor",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=10,
    description="Starts downstream steps (features, training, registration, inference) when their inputs are ready.",
)
