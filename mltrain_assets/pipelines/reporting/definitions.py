"""The reporting definitions the code location merges next to the pipelines' (``mltrain_assets/definitions.py``).

Not a pipeline of ``MLTRAIN_PIPELINES``: it lands no data and has no stages; it reads every
registered pipeline's shape (``Pipeline.quality``) and records.
"""

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from mltrain_assets.core.assets import with_code_references
from mltrain_assets.core.partitions import daily_partitions
from mltrain_assets.core.pipeline import all_pipelines
from mltrain_assets.pipelines.reporting.assets import ASSET, quality_report_asset
from mltrain_assets.pipelines.reporting.freshness import key_freshness_checks, key_freshness_sensor

model_quality_report = quality_report_asset(all_pipelines())

model_quality_report_job = define_asset_job(
    "model_quality_report_job",
    selection=AssetSelection.assets(ASSET),
    partitions_def=daily_partitions,
    executor_def=in_process_executor,
    description="Render the model quality, cost and staleness report for a date.",
)

defs = Definitions(
    assets=with_code_references([model_quality_report]),
    # Each city of every date x city asset judged on its own against the asset's freshness policy.
    asset_checks=key_freshness_checks(all_pipelines()),
    jobs=[model_quality_report_job],
    sensors=[key_freshness_sensor(all_pipelines())],
)
