"""Data gates: did a day land completely, and does it match its contract?

Pure functions over ingestion manifests' summaries; assets turn them into blocking
``AssetCheckResult``s. Every failure names the partition, the rule and the observed value.
"""

from __future__ import annotations

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


def landed_complete(asset: str, summaries: dict[str, dict], min_rows_per_day: int) -> GateOutcome:
    """All 24 hourly buckets arrived, each with a plausible count, and the day has enough rows."""
    outcome = GateOutcome("landed_complete")
    for partition, summary in sorted(summaries.items()):
        rows_by_hour = {int(h): int(n) for h, n in (summary.get("rows_by_hour") or {}).items()}
        missing = [h for h in range(HOURS_PER_DAY) if rows_by_hour.get(h, 0) == 0]
        if missing:
            outcome.violations.append(
                f"{asset} {partition}: rule hourly_buckets_complete: missing hours {missing} "
                f"({HOURS_PER_DAY - len(missing)}/{HOURS_PER_DAY} present)"
            )
        present = [n for n in rows_by_hour.values() if n > 0]
        if present:
            floor = MIN_HOUR_SHARE_OF_MEDIAN * median(present)
            thin = sorted(h for h, n in rows_by_hour.items() if 0 < n < floor)
            if thin:
                outcome.violations.append(
                    f"{asset} {partition}: rule plausible_hourly_counts: hours {thin} have fewer than "
                    f"{floor:.0f} rows (5% of the median hour); counts {[rows_by_hour[h] for h in thin]}"
                )
        rows = int(summary.get("rows", 0))
        if rows < min_rows_per_day:
            outcome.violations.append(
                f"{asset} {partition}: rule min_rows_per_day: {rows} rows < floor {min_rows_per_day}"
            )
        outcome.observed[partition] = {"rows": rows, "hours_present": HOURS_PER_DAY - len(missing)}
    return outcome


def matches_contract(asset: str, summaries: dict[str, dict]) -> GateOutcome:
    """Schema matched (ingestion refuses otherwise) and the rows that broke value rules were quarantined."""
    outcome = GateOutcome("matches_contract")
    for partition, summary in sorted(summaries.items()):
        if not summary.get("schema_ok", False):
            outcome.violations.append(f"{asset} {partition}: rule schema: landed files do not match the schema")
        outcome.observed[partition] = {
            "rows_rejected": int(summary.get("rows_rejected", 0)),
            "rejected_by_rule": summary.get("rejected_by_rule") or {},
            "duplicates_removed": int(summary.get("duplicates_removed", 0)),
        }
    return outcome
