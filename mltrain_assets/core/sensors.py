"""Landing sensors: start a date's ingestion when its ``_SUCCESS`` marker appears.

Downstream steps follow by declarative automation (``mltrain_assets.core.automation``), so a
landed day flows through features, training, gates, registration and inference.
"""

import datetime as dt
import json

from dagster import AssetKey, DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from mltrain_assets.core.partitions import PARTITIONS_START_DATE
from mltrain_assets.landing import landed_days
from mltrain_assets.resources.storage import ArtifactStorage

# Landed days older than this (before today, UTC), or before the first partition
# (MLTRAIN_PARTITIONS_START), are left alone: a first tick on a long-lived landing zone must not
# replay years. Late days within it are picked up.
LOOKBACK_DAYS = 120


def plan_landing_runs(
    dataset: str, days, cursor: dict[str, str], already_ingested: set[str] = frozenset(), today: dt.date | None = None
) -> tuple[list[RunRequest], dict[str, str]]:
    """Run requests for days that landed, or re-landed with other content, since ``cursor``.

    ``cursor`` maps date -> fingerprint of its ``_SUCCESS`` marker. The first run of a date has
    run key ``<dataset>:<date>``; a re-landed day with a changed marker gets a new key. A day
    first seen already ingested (by the demo, a backfill or the schedule) is adopted, not rerun.
    """
    if not days:
        return [], cursor
    today = today or dt.datetime.now(dt.UTC).date()
    horizon = max(today - dt.timedelta(days=LOOKBACK_DAYS), dt.date.fromisoformat(PARTITIONS_START_DATE))
    requests, cursor = [], dict(cursor)
    for day in days:
        if dt.date.fromisoformat(day.date) < horizon or cursor.get(day.date) == day.marker_sha256:
            continue
        if day.date not in cursor and day.date in already_ingested:
            cursor[day.date] = day.marker_sha256
            continue
        run_key = f"{dataset}:{day.date}" if day.date not in cursor else f"{dataset}:{day.date}:{day.marker_sha256}"
        requests.append(
            RunRequest(
                run_key=run_key,
                partition_key=day.date,
                tags={"mltrain/landing_marker": day.marker_sha256, "mltrain/trigger": "landing_sensor"},
            )
        )
        cursor[day.date] = day.marker_sha256
    oldest_kept = (horizon - dt.timedelta(days=LOOKBACK_DAYS)).isoformat()
    return requests, {d: m for d, m in cursor.items() if d >= oldest_kept}


def landing_sensor(dataset: str, asset_name: str, job):
    @sensor(
        name=f"{dataset}_landing_sensor",
        job=job,
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Starts {job.name} for each date whose {dataset} `_SUCCESS` marker appeared or changed.",
    )
    def _sensor(context: SensorEvaluationContext, storage: ArtifactStorage):
        cursor = json.loads(context.cursor) if context.cursor else {}
        ingested = set(context.instance.get_materialized_partitions(AssetKey(asset_name)))
        requests, new_cursor = plan_landing_runs(dataset, landed_days(storage.landing_uri, dataset), cursor, ingested)
        if not requests:
            return SensorResult(
                skip_reason=SkipReason(f"no new {dataset} days under {storage.landing_uri}"),
                cursor=json.dumps(new_cursor, sort_keys=True),
            )
        context.log.info(f"{dataset}: requesting {[r.partition_key for r in requests]}")
        return SensorResult(run_requests=requests, cursor=json.dumps(new_cursor, sort_keys=True))

    return _sensor
