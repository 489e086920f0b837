"""``model_quality_report``: per date, each model against its gate, what the date cost, how stale things are.

A daily asset over every registered pipeline. It depends on each pipeline's downstream assets
(the date x city ones through the date dimension) so that automation re-renders a date when
any of them updates, and reads what it shows from the instance's records rather than loading
inputs, so a missing city or a failed gate is a row that says so rather than a failed run.
The Markdown (with the plot embedded, for the UI) is the materialization's metadata; the
Markdown, the PNG and the data behind them are committed as a version like every other asset.
"""

from collections.abc import Sequence

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AutomationCondition,
    Config,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    MultiToSingleDimensionPartitionMapping,
    asset,
)
from pydantic import Field

from mltrain_assets.artifacts import ArtifactWriter, compute_version, join_uri
from mltrain_assets.core.partitions import daily_partitions
from mltrain_assets.core.pipeline import Pipeline
from mltrain_assets.core.report import (
    DEFAULT_GRACE_HOURS,
    DEFAULT_HISTORY_DAYS,
    JSON_FILE,
    MARKDOWN_FILE,
    PNG_FILE,
    QualityReport,
    png_data_uri,
    render_markdown,
    render_png,
)
from mltrain_assets.pipelines.reporting.collect import collect_report, quality_spec
from mltrain_assets.resources.storage import ArtifactStorage
from mltrain_assets.resources.tracking import ModelRegistry

ASSET = "model_quality_report"
GROUP = "reporting"
OWNERS = ("team:ml-platform",)  # the report spans every pipeline: the platform team's
CODE_VERSION = "quality-report-2"  # 2: freshness per key (city)


class ReportConfig(Config):
    history_days: int = Field(default=DEFAULT_HISTORY_DAYS, description="Dates the plot and landing table cover.")
    landing_grace_hours: float = Field(
        default=DEFAULT_GRACE_HOURS,
        description="A landed day is late when its _SUCCESS marker appears later than this after the end of the day.",
    )


def when_any_upstream_updates() -> AutomationCondition:
    """Re-render a date whenever any of its upstream partitions updates, once none is in progress.

    Unlike ``eager()``: any date (backfills too), and missing upstream partitions (a city not yet
    trained, a registration a failed gate blocked) do not hold the report back: it says so.
    """
    return (
        AutomationCondition.any_deps_updated().since_last_handled()
        & ~AutomationCondition.any_deps_in_progress()
        & ~AutomationCondition.in_progress()
    ).with_label("any upstream partition of the date updated")


def report_deps(pipelines: Sequence[Pipeline]) -> list[AssetDep]:
    """Each reported pipeline's downstream assets; date x key ones map to the date they belong to."""
    deps = []
    for pipeline in pipelines:
        if quality_spec(pipeline) is None:
            continue
        deps += [AssetDep(name) for name in pipeline.daily_assets]
        deps += [
            AssetDep(name, partition_mapping=MultiToSingleDimensionPartitionMapping(partition_dimension_name="date"))
            for name in pipeline.keyed_assets
        ]
    return deps


def summary_of(report: QualityReport) -> dict[str, int]:
    rows = [row for section in report.sections for row in section.rows]
    return {
        "models": len(rows),
        "models_not_trained": sum(row.value is None for row in rows),
        "gates_failed": sum(row.gate_passed is False for row in rows),
        "models_promoted": sum(row.promoted is True for row in rows),
        "late_landings": sum(bool(row.late) for row in report.landings),
        # (asset, key) pairs whose newest partition is stale: a city no longer getting new models
        "stale_keys": len(report.stale_keys()),
    }


def quality_report_asset(pipelines: Sequence[Pipeline]):
    @asset(
        name=ASSET,
        partitions_def=daily_partitions,
        deps=report_deps(pipelines),
        group_name=GROUP,
        owners=list(OWNERS),
        tags={"pipeline": "reporting", "layer": "report"},
        code_version=CODE_VERSION,
        kinds={"matplotlib", "markdown"},
        automation_condition=when_any_upstream_updates(),
        description=(
            "Per date: each model's metric against its gate threshold (and a naive baseline), gate result, "
            "promotion, days since the last promotion, what the date's steps cost (wall, CPU, peak memory), "
            "which landed days arrived late, and freshness per asset and per city. Markdown + PNG, committed "
            "like every asset."
        ),
    )
    def model_quality_report(
        context: AssetExecutionContext, config: ReportConfig, storage: ArtifactStorage, registry: ModelRegistry
    ) -> MaterializeResult:
        date = context.partition_key
        report = collect_report(
            context.instance,
            date,
            pipelines,
            landing_uri=storage.landing_uri,
            registry=registry,
            history_days=config.history_days,
            grace_hours=config.landing_grace_hours,
        )
        png = render_png(report)
        markdown = render_markdown(report)  # links quality.png next to it, as `mltrain report` writes it
        fingerprint = report.fingerprint()
        version = compute_version(CODE_VERSION, {"report": fingerprint}, config.model_dump())
        uri = storage.version_uri(ASSET, date, version)
        reused = storage.committed_manifest(uri) is not None
        summary = summary_of(report)
        if not reused:
            writer = ArtifactWriter(uri, producer=__name__, code_version=CODE_VERSION, inputs={"report": fingerprint})
            writer.write_bytes(MARKDOWN_FILE, markdown.encode())
            writer.write_bytes(PNG_FILE, png)
            writer.write_json(JSON_FILE, report.to_dict())
            writer.commit(summary=summary)
        return MaterializeResult(
            metadata={
                "report": MetadataValue.md(render_markdown(report, image=png_data_uri(png))),
                "uri": MetadataValue.path(uri),
                "markdown_file": MetadataValue.path(join_uri(uri, MARKDOWN_FILE)),
                "plot_file": MetadataValue.path(join_uri(uri, PNG_FILE)),
                "version": version,
                "reused_committed_version": reused,
                **summary,
            },
            data_version=DataVersion(version),
        )

    return model_quality_report
