"""Completeness of a landed day: the one rule text ingestion rejects by and the ``landed_complete`` gate shows.

Dagster-free (the ingestion workload imports it); ``core.gates.landed_complete`` wraps the same
function, so the check a person reads in the UI and the rejection a workload raises say the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from statistics import median

HOURS_PER_DAY = 24
# An hour with fewer rows than this share of the day's median hour is not plausible.
MIN_HOUR_SHARE_OF_MEDIAN = 0.05

HOURLY_BUCKETS_RULE = "hourly_buckets_complete"
PLAUSIBLE_COUNTS_RULE = "plausible_hourly_counts"
MIN_ROWS_RULE = "min_rows_per_day"


def completeness_violations(rows_by_hour: Mapping[int, int], rows: int, min_rows: int) -> list[tuple[str, str]]:
    """``[(rule, what was observed)]``: missing hours, implausibly thin hours, too few rows (empty when complete)."""
    violations = []
    missing = missing_hours(rows_by_hour)
    if missing:
        violations.append(
            (HOURLY_BUCKETS_RULE, f"missing hours {missing} ({HOURS_PER_DAY - len(missing)}/{HOURS_PER_DAY} present)")
        )
    present = [n for n in rows_by_hour.values() if n > 0]
    if present:
        floor = MIN_HOUR_SHARE_OF_MEDIAN * median(present)
        thin = sorted(h for h, n in rows_by_hour.items() if 0 < n < floor)
        if thin:
            violations.append(
                (
                    PLAUSIBLE_COUNTS_RULE,
                    f"hours {thin} have fewer than {floor:.0f} rows (5% of the median hour); "
                    f"counts {[rows_by_hour[h] for h in thin]}",
                )
            )
    if rows < min_rows:
        violations.append((MIN_ROWS_RULE, f"{rows} rows < floor {min_rows}"))
    return violations


def missing_hours(rows_by_hour: Mapping[int, int]) -> list[int]:
    return [h for h in range(HOURS_PER_DAY) if rows_by_hour.get(h, 0) == 0]
