"""Daily UTC schedules: the fallback when a landing sensor missed a day (or is off).

They are on by default (like the landing sensors): a tick with nothing to do skips with its
reason (not landed yet, or already ingested), so running them costs nothing.
"""

import datetime as dt

from dagster import (
    AssetKey,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from mltrain_assets.landing import day_status, success_uri
from mltrain_assets.resources.storage import ArtifactStorage


def daily_fallback_schedule(dataset: str, asset_name: str, job, cron: str):
    @schedule(
        name=f"{dataset}_daily_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Each day (UTC) ingests yesterday's {dataset} if the landing sensor has not; skips if not landed.",
    )
    def _schedule(context: ScheduleEvaluationContext, storage: ArtifactStorage):
        date = (context.scheduled_execution_time.astimezone(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
        status = day_status(storage.landing_uri, dataset, date)
        if not status["success"]:
            return SkipReason(
                f"{dataset} {date} has not landed: no _SUCCESS marker at {success_uri(storage.landing_uri, dataset, date)} "
                f"({len(status['hours'])}/24 hourly buckets present)"
            )
        if _materialized(context, asset_name, date):
            return SkipReason(f"{asset_name} {date} is already materialized (the landing sensor ran it)")
        return RunRequest(
            run_key=f"{dataset}:{date}:schedule", partition_key=date, tags={"mltrain/trigger": "daily_schedule"}
        )

    return _schedule


def _materialized(context: ScheduleEvaluationContext, asset_name: str, date: str) -> bool:
    return date in context.instance.get_materialized_partitions(AssetKey(asset_name))
