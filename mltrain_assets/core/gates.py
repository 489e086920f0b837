"""Gates: the one mechanism that decides whether a partition may be built on.

A ``Gate`` is a named rule over the summary a workload committed for one partition. The
step that produces a partition evaluates its gates (``core.steps``): each gate becomes a
blocking ``AssetCheckResult`` and its violations are recorded in the partition's reference.
The reference IO manager refuses to hand a gated reference to any downstream asset, so no
asset body can forget the check. Every violation names the asset, partition, rule and value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from statistics import median
from typing import Any

HOURS_PER_DAY = 24
# An hour with fewer rows than this share of the day's median hour is not plausible.
MIN_HOUR_SHARE_OF_MEDIAN = 0.05


@dataclass
class GateOutcome:
    """One gate over one or more partitions: passed, and the violations that failed it."""

    name: str
    violations: list[str] = field(default_factory=list)
    observed: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.violations

    def describe(self) -> str:
        return "passed" if self.passed else "; ".join(self.violations)


# (asset, partition, committed summary) -> (violations, observed values) for that partition
GateRule = Callable[[str, str, Mapping[str, Any]], tuple[list[str], dict[str, Any]]]


@dataclass(frozen=True)
class Gate:
    """A blocking check that a producing step evaluates on each partition it commits."""

    name: str
    description: str
    rule: GateRule

    def evaluate(self, asset: str, summaries: Mapping[str, Mapping[str, Any]]) -> GateOutcome:
        """The outcome over one or more partitions (``{partition: summary}``)."""
        outcome = GateOutcome(self.name)
        for partition, summary in sorted(summaries.items()):
            violations, observed = self.rule(asset, partition, summary)
            outcome.violations.extend(violations)
            outcome.observed[partition] = observed
        return outcome


# ------------------------------------------------------------------ data gates (ingestion)


def landed_complete(min_rows_per_day: int) -> Gate:
    """All 24 hourly buckets arrived, each with a plausible count, and the day has enough rows."""

    def rule(asset: str, partition: str, summary: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
        violations = []
        rows_by_hour = {int(h): int(n) for h, n in (summary.get("rows_by_hour") or {}).items()}
        missing = [h for h in range(HOURS_PER_DAY) if rows_by_hour.get(h, 0) == 0]
        if missing:
            violations.append(
                f"{asset} {partition}: rule hourly_buckets_complete: missing hours {missing} "
                f"({HOURS_PER_DAY - len(missing)}/{HOURS_PER_DAY} present)"
            )
        present = [n for n in rows_by_hour.values() if n > 0]
        if present:
            floor = MIN_HOUR_SHARE_OF_MEDIAN * median(present)
            thin = sorted(h for h, n in rows_by_hour.items() if 0 < n < floor)
            if thin:
                violations.append(
                    f"{asset} {partition}: rule plausible_hourly_counts: hours {thin} have fewer than "
                    f"{floor:.0f} rows (5% of the median hour); counts {[rows_by_hour[h] for h in thin]}"
                )
        rows = int(summary.get("rows", 0))
        if rows < min_rows_per_day:
            violations.append(f"{asset} {partition}: rule min_rows_per_day: {rows} rows < floor {min_rows_per_day}")
        return violations, {"rows": rows, "hours_present": HOURS_PER_DAY - len(missing)}

    return Gate(
        "landed_complete",
        "All 24 hourly buckets arrived with plausible counts, and the day has enough rows.",
        rule,
    )


def _matches_contract(asset: str, partition: str, summary: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    violations = []
    if not summary.get("schema_ok", False):
        violations.append(f"{asset} {partition}: rule schema: landed files do not match the schema")
    return violations, {
        "rows_rejected": int(summary.get("rows_rejected", 0)),
        "rejected_by_rule": summary.get("rejected_by_rule") or {},
        "duplicates_removed": int(summary.get("duplicates_removed", 0)),
    }


MATCHES_CONTRACT = Gate(
    "matches_contract",
    "Landed files match the schema; rows breaking value rules were quarantined (<= 1%).",
    _matches_contract,
)


# ------------------------------------------------------------------ metric gates (models)


def metric_below(
    check_name: str, metric: str, threshold: float, description: str, context: tuple[str, ...] = ()
) -> Gate:
    """The committed ``metric`` must be strictly below ``threshold`` (a missing value fails).

    ``context`` names other summary values shown beside it (e.g. a naive baseline).
    """
    return _metric_gate(check_name, metric, threshold, description, context, below=True)


def metric_above(
    check_name: str, metric: str, threshold: float, description: str, context: tuple[str, ...] = ()
) -> Gate:
    """The committed ``metric`` must be strictly above ``threshold`` (a missing value fails)."""
    return _metric_gate(check_name, metric, threshold, description, context, below=False)


def _metric_gate(
    check_name: str, metric: str, threshold: float, description: str, context: tuple[str, ...], *, below: bool
) -> Gate:
    sign = "<" if below else ">"

    def rule(asset: str, partition: str, summary: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
        value = summary.get(metric)
        passed = value is not None and (value < threshold if below else value > threshold)
        violations = (
            [] if passed else [f"{asset} {partition}: rule {metric} {sign} {threshold}: observed {metric}={value}"]
        )
        return violations, {metric: value, **{k: summary.get(k) for k in context}, "threshold": threshold}

    return Gate(check_name, description, rule)
