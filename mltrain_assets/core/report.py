"""The model quality report as a person reads it: quality, cost and staleness of one date.

Dagster-free: ``QualityReport`` is plain data (``core/report_data.py``; ``pipelines/reporting/collect.py``
fills it from the Dagster instance, the landing zone and the model registry); this module renders it as
Markdown and as a PNG (matplotlib's Agg canvas, no pyplot and no global backend). The asset
``model_quality_report`` and ``mltrain report`` write the same files.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
from pathlib import Path

# The report's data (report_data); the defaults and FreshnessRow stay importable here, where their users import them.
from mltrain_assets.core.report_data import (
    DEFAULT_GRACE_HOURS,
    DEFAULT_HISTORY_DAYS,
    FreshnessRow,
    LandingRow,
    ModelRow,
    ModelSection,
    QualityReport,
)

__all__ = [
    "DEFAULT_GRACE_HOURS",
    "DEFAULT_HISTORY_DAYS",
    "JSON_FILE",
    "MARKDOWN_FILE",
    "PNG_FILE",
    "PNG_SIGNATURE",
    "FreshnessRow",
    "QualityReport",
    "png_data_uri",
    "quality_figure",
    "render_markdown",
    "render_png",
    "write_report",
]

MARKDOWN_FILE = "report.md"
PNG_FILE = "quality.png"
JSON_FILE = "report.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
