"""The model quality report as a person reads it: quality, cost and staleness of one date.

Dagster-free: ``QualityReport`` is plain data (``pipelines/reporting/collect.py`` fills it from the
Dagster instance, the landing zone and the model registry); this module renders it as Markdown
and as a PNG (matplotlib's Agg canvas, no pyplot and no global backend), and says when each
landed day arrived. The asset ``model_quality_report`` and ``mltrain report`` write the same files.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKDOWN_FILE = "report.md"
PNG_FILE = "quality.png"
JSON_FILE = "report.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
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


# ------------------------------------------------------------------ Markdown


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _gate(row: ModelRow, section: ModelSection) -> str:
    if row.gate_passed is None:
        return "not run" if row.value is None else "—"
    return "pass" if row.gate_passed else f"**FAIL** ({section.rule} not met)"


def _promotion(row: ModelRow) -> str:
    if row.promoted is None:
        return "not registered"
    return f"v{row.version} promoted" if row.promoted else f"v{row.version} not promoted"


def _staleness(row: ModelRow) -> str:
    if row.last_promoted is None:
        return "never promoted"
    return f"{row.days_since_promotion} ({row.last_promoted})"


def _landing_cell(row: LandingRow | None, grace_hours: float) -> str:
    if row is None or row.landed_at is None:
        return "not landed"
    after = f"{row.hours_after_day:+.1f} h"
    return f"**late** ({after})" if row.late else f"on time ({after})"


def render_markdown(report: QualityReport, image: str | None = PNG_FILE) -> str:
    """The report as Markdown; ``image`` is the PNG's link (a file name, or a ``data:`` URI for the Dagster UI)."""
    lines = [f"# Model quality, cost and staleness: {report.date}", ""]
    for section in report.sections:
        lines += [f"## {section.title or section.pipeline}: {section.rule}", ""]
        baseline = [f"{section.baseline} (baseline)"] if section.baseline else []
        header = [
            section.key_label,
            section.metric,
            *baseline,
            "threshold",
            "gate",
            "registered / promoted",
            "days since promotion (date)",
            "staging now",
        ]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in section.rows:
            cells = [
                row.key or row.model_name,
                _num(row.value),
                *([_num(row.baseline)] if section.baseline else []),
                f"{'<' if section.lower_is_better else '>'} {section.threshold:g}",
                _gate(row, section),
                _promotion(row),
                _staleness(row),
                row.staging_now or "—",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        f"## Cost of {report.date}",
        "",
        "Every materialization of the date's partitions (reused versions cost 0; a range ingestion shares its "
        "launch among the dates it built).",
        "",
        "| pipeline | materializations | ran a workload | reused | wall s | CPU s | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for cost in report.costs:
        cpu = f"{cost.cpu_s:.1f}" + (f" (+{cost.unmeasured} unmeasured on k8s)" if cost.unmeasured else "")
        lines.append(
            f"| {cost.pipeline} | {cost.materializations} | {cost.launched} | {cost.reused} | {cost.wall_s:.1f} | "
            f"{cpu} | {_num(cost.peak_rss_mb, 0)} |"
        )
    datasets = sorted({row.dataset for row in report.landings})
    by_key = {(row.dataset, row.date): row for row in report.landings}
    lines += [
        "",
        f"## Landing arrivals (due at the end of the day + {report.grace_hours:g} h, UTC)",
        "",
        "Hours between the end of the day and its `_SUCCESS` marker.",
        "",
        "| date | " + " | ".join(datasets) + " |",
        "|---|" + "---|" * len(datasets),
    ]
    for date in reversed(report.history_dates()):
        cells = [_landing_cell(by_key.get((d, date)), report.grace_hours) for d in datasets]
        lines.append(f"| {date} | " + " | ".join(cells) + " |")
    landed = [row for row in report.landings if row.landed_at is not None]
    late = [row for row in landed if row.late]
    lines += ["", f"{len(late)} of {len(landed)} landed days arrived late.", ""]
    lines += _freshness_lines(report)
    if image:
        lines += [f"## Last {report.history_days} days", "", f"![quality per date]({image})", ""]
    return "\n".join(lines)


def _freshness_lines(report: QualityReport) -> list[str]:
    if not report.freshness:
        return _key_freshness_lines(report)
    lines = [
        f"## Freshness as of {report.freshness_as_of}",
        "",
        "Hours since each asset's last materialization against its freshness policy (warn / fail after), "
        "as the asset health in the Dagster UI shows it.",
        "",
        "| pipeline | layer | asset | last materialized | hours since | warn / fail after (h) | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report.freshness:
        status = row.status if row.status == "fresh" else f"**{row.status}**"
        lines.append(
            f"| {row.pipeline} | {row.layer} | {row.asset} | {row.last_updated or '—'} | {_num(row.age_hours, 1)} | "
            f"{row.warn_hours:g} / {row.fail_hours:g} | {status} |"
        )
    return [*lines, "", *_key_freshness_lines(report)]


def _key_freshness_lines(report: QualityReport) -> list[str]:
    """Per city: an asset is fresh while any city updates, so each city's newest partition is judged on its own."""
    if not report.key_freshness:
        return []
    stale = report.stale_keys()
    keys = sorted({row.key for row in report.key_freshness})
    stale_keys = sorted({row.key for row in stale})
    headline = (
        f"**{len(stale_keys)} of {len(keys)} stale: {', '.join(stale_keys)}.**" if stale else f"All {len(keys)} fresh."
    )
    lines = [
        "## Freshness per key",
        "",
        "Each key's (city's) newest date and when it was last materialized, against the asset's freshness policy: "
        f"{headline}",
        "",
        "| pipeline | asset | key | newest date | last materialized | hours since | warn / fail after (h) | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in [*stale, *(row for row in report.key_freshness if not row.stale)]:
        status = row.status if row.status == "fresh" else f"**{row.status}**"
        lines.append(
            f"| {row.pipeline} | {row.asset} | {row.key} | {row.newest_date or '—'} | {row.last_updated or '—'} | "
            f"{_num(row.age_hours, 1)} | {row.warn_hours:g} / {row.fail_hours:g} | {status} |"
        )
    return [*lines, ""]


# ------------------------------------------------------------------ PNG


def quality_figure(report: QualityReport):
    """One panel per model: the metric per key (a line each) over the history, the threshold as a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    days = report.history_dates()
    dates = [dt.datetime.combine(dt.date.fromisoformat(d), dt.time()) for d in days]
    panels = max(len(report.sections), 1)
    figure = Figure(figsize=(9, 3.2 * panels), dpi=90, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(panels, 1, squeeze=False)[:, 0]
    for ax, section in zip(axes, report.sections, strict=False):
        names = {row.key: row.model_name for row in section.rows}
        for key in sorted(section.history) or sorted(names):
            series = section.history.get(key, {})
            values = [series.get(day, math.nan) for day in days]
            ax.plot(
                dates, values, marker="o", markersize=3, linewidth=1.2, label=key or names.get(key) or section.metric
            )
        ax.axhline(
            section.threshold, color="crimson", linestyle="--", linewidth=1, label=f"threshold {section.threshold:g}"
        )
        better = "lower is better" if section.lower_is_better else "higher is better"
        ax.set_title(f"{section.title or section.pipeline}: {section.metric.upper()} per date ({better})", fontsize=10)
        ax.set_ylabel(section.metric.upper())
        ax.grid(alpha=0.3)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
        ax.set_xlim(dates[0] - dt.timedelta(hours=12), dates[-1] + dt.timedelta(hours=12))
        for label in ax.get_xticklabels():
            label.set_rotation(30)
            label.set_horizontalalignment("right")
    if not report.sections:
        axes[0].text(0.5, 0.5, "no models to report", ha="center", va="center")
    return figure


def render_png(report: QualityReport) -> bytes:
    """``quality_figure`` as PNG bytes (Agg)."""
    figure = quality_figure(report)
    buffer = io.BytesIO()
    # No "Software" entry: the same report renders the same bytes.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(png).decode()


def write_report(report: QualityReport, folder: str | Path) -> tuple[Path, Path, str]:
    """Write ``report.md``, ``quality.png`` and ``report.json`` into ``folder``; ``(markdown, png, text)``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(report)
    (folder / MARKDOWN_FILE).write_text(markdown)
    (folder / PNG_FILE).write_bytes(render_png(report))
    (folder / JSON_FILE).write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str))
    return folder / MARKDOWN_FILE, folder / PNG_FILE, markdown
