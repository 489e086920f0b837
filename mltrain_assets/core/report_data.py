"""The model quality report's plain data: models against their gates, cost, landing arrivals and freshness.

Dagster-free: ``pipelines/reporting/collect.py`` fills ``QualityReport`` from the Dagster instance, the landing
zone and the model registry; ``core/report.py`` renders it. ``landing_arrival`` says when a landed day arrived.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

DEFAULT_HISTORY_DAYS = 14
# A day is due at the end of the day (UTC) plus this grace; the fallback schedules ask for
# yesterday at 03:30 / 03:45 UTC, so a day that lands later than ~4 h after midnight missed them.
DEFAULT_GRACE_HOURS = 4.0


@dataclass(frozen=True)
class ModelRow:
    """One model for the report date: its metric against the gate, and what was promoted when."""

    key: str  # the key dimension's value (a city), or "" for a daily model
    model_name: str
    value: float | None  # the metric for the date; None: not trained (yet)
    baseline: float | None = None
    gate_passed: bool | None = None  # None: no gate result for the date
    version: str | None = None  # the version registered for the date
    promoted: bool | None = None  # None: not registered
    reason: str = ""
    last_promoted: str | None = None  # the newest date (<= report date) whose version was promoted
    days_since_promotion: int | None = None
    staging_now: str | None = None  # the registry's `staging` version now, e.g. "v3 (2026-03-10)"


@dataclass(frozen=True)
class ModelSection:
    """One pipeline's model: a row per key for the date, and the metric per key over the history."""

    pipeline: str
    title: str
    metric: str
    threshold: float
    lower_is_better: bool
    key_label: str  # "city", or "model" for a daily model
    rows: list[ModelRow]
    history: dict[str, dict[str, float]] = field(default_factory=dict)  # key -> {date: metric}
    baseline: str = ""

    @property
    def rule(self) -> str:
        return f"{self.metric.upper()} {'<' if self.lower_is_better else '>'} {self.threshold:g}"


@dataclass(frozen=True)
class CostRow:
    """What one pipeline's steps cost for the date (every materialization of its partitions)."""

    pipeline: str
    materializations: int
    launched: int  # materializations that ran a workload
    reused: int  # materializations that found their version committed
    wall_s: float
    cpu_s: float  # of the materializations whose CPU was measured
    unmeasured: int  # launched materializations without a CPU figure (k8s pods)
    peak_rss_mb: float | None


@dataclass(frozen=True)
class LandingRow:
    """When one landed day's ``_SUCCESS`` marker appeared, against its due time."""

    dataset: str
    date: str
    due: str  # ISO UTC: the end of the day plus the grace
    landed_at: str | None  # ISO UTC; None: not landed
    hours_after_day: float | None  # hours between the end of the day and the marker

    @property
    def late(self) -> bool | None:
        return None if self.landed_at is None else self.landed_at > self.due


@dataclass(frozen=True)
class FreshnessRow:
    """One asset's (or one key's of it) last update against its freshness policy (the windows the UI's asset health uses).

    With ``key`` (a city): that key's partitions only, ``newest_date`` the newest date materialized
    for it and ``last_updated`` when that date was last materialized.
    """

    pipeline: str
    asset: str
    layer: str
    warn_hours: float
    fail_hours: float
    last_updated: str | None  # ISO UTC of its latest materialization at ``as_of``; None: never
    age_hours: float | None  # hours between that and ``as_of``
    key: str = ""
    newest_date: str | None = None

    @property
    def status(self) -> str:
        if self.age_hours is None:
            return "never materialized"
        if self.age_hours > self.fail_hours:
            return "fail"
        return "warn" if self.age_hours > self.warn_hours else "fresh"

    @property
    def stale(self) -> bool:
        return self.status != "fresh"

    def describe(self) -> str:
        """One line naming the asset, the key, what was last materialized when, and the policy."""
        who = f"{self.asset} {self.key}".strip()
        if self.age_hours is None:
            return f"{who}: never materialized (warn after {self.warn_hours:g} h, fail after {self.fail_hours:g} h)"
        newest = f" (newest date {self.newest_date})" if self.newest_date else ""
        verdict = {"fresh": "fresh", "warn": "STALE (warn)", "fail": "STALE (fail)"}[self.status]
        return (
            f"{who}: {verdict}: last materialized {self.last_updated}{newest}, {self.age_hours:.1f} h ago; "
            f"warn after {self.warn_hours:g} h, fail after {self.fail_hours:g} h"
        )


@dataclass(frozen=True)
class QualityReport:
    date: str
    history_days: int
    grace_hours: float
    sections: list[ModelSection]
    costs: list[CostRow]
    landings: list[LandingRow]
    freshness: list[FreshnessRow] = field(default_factory=list)
    freshness_as_of: str = ""  # ISO UTC: when the report was rendered
    key_freshness: list[FreshnessRow] = field(default_factory=list)  # per key (city) of each date x key asset

    def stale_keys(self) -> list[FreshnessRow]:
        """The keys (cities) whose newest partition is stale, worst first."""
        order = {"never materialized": 0, "fail": 1, "warn": 2}
        return sorted((row for row in self.key_freshness if row.stale), key=lambda r: (order[r.status], r.asset, r.key))

    def history_dates(self) -> list[str]:
        return history_dates(self.date, self.history_days)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """A hash of everything the report shows: the same state renders the same version.

        Freshness counts by status and last update, not by the hours that pass while nothing changes.
        """
        shown = self.to_dict()
        shown.pop("freshness_as_of")
        shown["freshness"] = [(row.asset, row.last_updated, row.status) for row in self.freshness]
        shown["key_freshness"] = [(row.asset, row.key, row.last_updated, row.status) for row in self.key_freshness]
        text = json.dumps(shown, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def history_dates(date: str, days: int) -> list[str]:
    """The ``days`` dates ending at ``date``, oldest first."""
    end = dt.date.fromisoformat(date)
    return [(end - dt.timedelta(days=n)).isoformat() for n in range(max(days, 1) - 1, -1, -1)]


def due_time(date: str, grace_hours: float) -> dt.datetime:
    """When a date's day is due: the end of the day (UTC) plus the grace."""
    end_of_day = dt.datetime.combine(dt.date.fromisoformat(date) + dt.timedelta(days=1), dt.time(), dt.UTC)
    return end_of_day + dt.timedelta(hours=grace_hours)


def days_between(earlier: str, later: str) -> int:
    return (dt.date.fromisoformat(later) - dt.date.fromisoformat(earlier)).days


# ------------------------------------------------------------------ landing arrivals


def landing_arrival(landing_uri: str, dataset: str, date: str, grace_hours: float) -> LandingRow:
    """When ``{landing}/{dataset}/date={date}/_SUCCESS`` was written (its modification time), vs its due time.

    Per partition, which a freshness policy (the time since the asset's last update) cannot say.
    """
    from mltrain_assets.landing import success_uri

    due = due_time(date, grace_hours)
    landed = _modified(success_uri(landing_uri, dataset, date))
    return LandingRow(
        dataset=dataset,
        date=date,
        due=_iso(due),
        landed_at=_iso(landed) if landed else None,
        hours_after_day=round((landed - due + dt.timedelta(hours=grace_hours)).total_seconds() / 3600, 2)
        if landed
        else None,
    )


def _modified(uri: str) -> dt.datetime | None:
    from mltrain_assets.artifacts import filesystem

    fs, path = filesystem(uri)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    stamp = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or info.get("created")
    if isinstance(stamp, (int, float)):
        return dt.datetime.fromtimestamp(stamp, dt.UTC)
    if isinstance(stamp, dt.datetime):
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
    if isinstance(stamp, str):
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return None


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
