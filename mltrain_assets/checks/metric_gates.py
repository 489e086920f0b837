"""Metric gates: a model is promoted only if its held-out metric clears the bar."""

from __future__ import annotations

from mltrain_assets.checks.data_gates import GateOutcome
from mltrain_assets.workloads.demand_config import MAPE_THRESHOLD

__all__ = ["AUC_THRESHOLD", "MAPE_THRESHOLD", "metric_above", "metric_below"]
AUC_THRESHOLD = 0.82


def metric_below(asset: str, partition: str, metric: str, value: float | None, threshold: float) -> GateOutcome:
    outcome = GateOutcome(f"{metric}_below_{threshold}", observed={metric: value, "threshold": threshold})
    if value is None or not value < threshold:
        outcome.violations.append(f"{asset} {partition}: rule {metric} < {threshold}: observed {metric}={value}")
    return outcome


def metric_above(asset: str, partition: str, metric: str, value: float | None, threshold: float) -> GateOutcome:
    outcome = GateOutcome(f"{metric}_above_{threshold}", observed={metric: value, "threshold": threshold})
    if value is None or not value > threshold:
        outcome.violations.append(f"{asset} {partition}: rule {metric} > {threshold}: observed {metric}={value}")
    return outcome
