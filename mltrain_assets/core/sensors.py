"""Landing sensors: start a date's ingestion when its ``_SUCCESS`` marker appears, or its content changes.

Downstream steps follow by declarative automation (``mltrain_assets.core.automation``), so a
landed day flows through features, training, gates, registration and inference.

Every tick lists the landing zone and compares each day's *listing fingerprint* (marker content +
each file's size and mtime on ``file://``, ETag on S3: nothing read but the markers) with the
cursor. Only a day whose listing changed is looked at closer: its *content fingerprint* (what
versions its ingestion, ``core.ingestion.landing_fingerprint``; on ``file://`` it reads that day's
bytes, within a budget per tick) is compared with what was last ingested or requested for it. A
corrected re-delivery is a new run (run key ``<dataset>:<date>:<fingerprint>``); an identical
rewrite or a touch is silent. Folders that are not a landed day to ingest (not a date, an
impossible date, before the first partition, after the last one, no ``_SUCCESS`` yet) are named in
the skip reason and the tick's log, and never stop the other days.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Collection, Mapping
from typing import NamedTuple

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from mltrain_assets.core.ingestion import LANDING_FINGERPRINT, landing_fingerprint
from mltrain_assets.core.partitions import PARTITIONS_START_DATE, PARTITIONS_START_ENV
from mltrain_assets.landing import LandedDay, SkippedFolder, bytes_to_hash, day_status, scan_landing
from mltrain_assets.resources.storage import ArtifactStorage
from mltrain_assets.settings import DEFAULT_LANDING_SENSOR_INTERVAL_S

# Landed days older than this (before today, UTC), or before the first partition
# (MLTRAIN_PARTITIONS_START), are left alone: a first tick on a long-lived landing zone must not
# replay years. Late days within it are picked up.
LOOKBACK_DAYS = 120
# Bytes one tick may read to fingerprint re-landed days' content (file://; S3 ETags cost nothing).
# A tick always checks at least one day; the rest wait for the next tick (30 s later).
CONTENT_BUDGET_BYTES = 2 << 30
# Folder names shown per reason in a skip reason before "... and N more".
SHOWN_FOLDERS = 5


class ContentCheck(NamedTuple):
    """A re-landed day's content fingerprint, and whether it is what was last ingested for that date."""

    fingerprint: str
    already_ingested: bool


# day -> its content check, or None when this tick's budget is spent (the day waits for the next tick)
ContentChecker = Callable[[LandedDay], ContentCheck | None]


class LandingPlan(NamedTuple):
    requests: list[RunRequest]
    cursor: dict[str, dict]
    notes: list[SkippedFolder]


def out_of_range(date: dt.date, today: dt.date) -> str | None:
    """Why a landed date is not a partition to ingest now, or ``None``."""
    first = dt.date.fromisoformat(PARTITIONS_START_DATE)
    last = today - dt.timedelta(days=1)
    if date < first:
        return f"before the first partition {first} ({PARTITIONS_START_ENV})"
    if date > last:
        return f"after the last partition {last} (yesterday, UTC): not a partition yet"
    if date < today - dt.timedelta(days=LOOKBACK_DAYS):
        return f"older than the sensor's {LOOKBACK_DAYS}-day lookback (backfill it)"
    return None


def _entry(value) -> dict:
    """A cursor entry: ``{"listing": ..., "content": ... or None}`` (a bare string: the marker hash of older cursors)."""
    if isinstance(value, dict):
        return {"listing": value.get("listing"), "content": value.get("content")}
    return {"listing": None, "content": None, "marker": value}


def _listing_changed(day: LandedDay) -> ContentCheck:
    """Without a checker (pure planning): a changed listing is a change, keyed by the listing fingerprint."""
    return ContentCheck(day.fingerprint, False)


def plan_landing_runs(
    dataset: str,
    days: list[LandedDay],
    cursor: Mapping[str, object],
    already_ingested: Collection[str] = frozenset(),
    today: dt.date | None = None,
    content_check: ContentChecker | None = None,
) -> LandingPlan:
    """Run requests for days that landed, or re-landed with other content, since ``cursor``.

    ``cursor`` maps date -> ``{"listing": listing fingerprint, "content": content fingerprint or
    None}``. The first run of a date has run key ``<dataset>:<date>``; a day whose listing changed
    is checked by ``content_check`` and, if its content is not what was last ingested or requested,
    gets ``<dataset>:<date>:<content fingerprint>``. A day first seen already ingested (by the demo,
    a backfill or the schedule) is adopted, not rerun. Days out of range are noted, not requested.
    """
    today = today or dt.datetime.now(dt.UTC).date()
    check = content_check or _listing_changed
    requests, notes = [], []
    new_cursor = {date: _entry(value) for date, value in cursor.items()}
    for day in days:
        reason = out_of_range(dt.date.fromisoformat(day.date), today)
        if reason:
            notes.append(SkippedFolder(f"date={day.date}", "out_of_range", reason))
            continue
        seen = new_cursor.get(day.date)
        if seen is not None and (seen["listing"] == day.fingerprint or seen.get("marker") == day.marker_sha256):
            # Unchanged (or first seen by an older cursor, which kept the marker hash): adopt the listing.
            new_cursor[day.date] = {"listing": day.fingerprint, "content": seen["content"]}
            continue
        tags = {
            "mltrain/landing_marker": day.marker_sha256,
            "mltrain/landing_listing": day.fingerprint,
            "mltrain/trigger": "landing_sensor",
        }
        if seen is None:
            new_cursor[day.date] = {"listing": day.fingerprint, "content": None}
            if day.date not in already_ingested:
                requests.append(RunRequest(run_key=f"{dataset}:{day.date}", partition_key=day.date, tags=tags))
            continue
        checked = check(day)
        if checked is None:
            notes.append(SkippedFolder(f"date={day.date}", "deferred", "re-landed; its content is checked next tick"))
            continue
        new_cursor[day.date] = {"listing": day.fingerprint, "content": checked.fingerprint}
        if checked.already_ingested or checked.fingerprint == seen["content"]:
            continue
        requests.append(
            RunRequest(
                run_key=f"{dataset}:{day.date}:{checked.fingerprint}",
                partition_key=day.date,
                tags={**tags, "mltrain/landing_fingerprint": checked.fingerprint},
            )
        )
    horizon = max(today - dt.timedelta(days=LOOKBACK_DAYS), dt.date.fromisoformat(PARTITIONS_START_DATE))
    oldest_kept = (horizon - dt.timedelta(days=LOOKBACK_DAYS)).isoformat()
    return LandingPlan(requests, {d: e for d, e in new_cursor.items() if d >= oldest_kept}, notes)


def describe_skipped(notes: list[SkippedFolder]) -> str:
    """One line per reason, naming the folders (``date=2026-02-30: '2026-02-30' is not a valid date``)."""
    by_reason: dict[str, list[str]] = {}
    for note in notes:
        by_reason.setdefault(note.reason, []).append(note.folder)
    lines = []
    for reason, folders in by_reason.items():
        shown = ", ".join(folders[:SHOWN_FOLDERS])
        more = f" and {len(folders) - SHOWN_FOLDERS} more" if len(folders) > SHOWN_FOLDERS else ""
        lines.append(f"{shown}{more}: {reason}")
    return "; ".join(lines)


class _ContentChecker:
    """Fingerprints re-landed days' content within a byte budget, against their last materialization."""

    def __init__(self, context: SensorEvaluationContext, asset_name: str, landing_uri: str, dataset: str):
        self.context, self.asset_key = context, AssetKey(asset_name)
        self.landing_uri, self.dataset = landing_uri, dataset
        self.spent = 0

    def __call__(self, day: LandedDay) -> ContentCheck | None:
        status = day_status(self.landing_uri, self.dataset, day.date)
        cost = bytes_to_hash(status)
        if self.spent and self.spent + cost > CONTENT_BUDGET_BYTES:
            return None
        self.spent += cost
        fingerprint = landing_fingerprint(status)
        return ContentCheck(fingerprint, fingerprint == self._ingested_fingerprint(day.date))

    def _ingested_fingerprint(self, date: str) -> str | None:
        records = self.context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=self.asset_key, asset_partitions=[date]), limit=1
        ).records
        if not records or records[0].asset_materialization is None:
            return None
        value = records[0].asset_materialization.metadata.get(LANDING_FINGERPRINT)
        fingerprint = value.value if value is not None else None
        return fingerprint if isinstance(fingerprint, str) else None


LANDING_SENSOR_INTERVAL_ENV = "MLTRAIN_LANDING_SENSOR_INTERVAL_S"


def landing_sensor(dataset: str, asset_name: str, job):
    @sensor(
        name=f"{dataset}_landing_sensor",
        job=job,
        # Read when the code location loads (validated with every setting): a change needs a reload.
        minimum_interval_seconds=int(os.environ.get(LANDING_SENSOR_INTERVAL_ENV) or DEFAULT_LANDING_SENSOR_INTERVAL_S),
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Starts {job.name} for each date whose {dataset} `_SUCCESS` marker appeared or whose "
        "landed content changed; names the folders it skips.",
    )
    def _sensor(context: SensorEvaluationContext, storage: ArtifactStorage):
        today = dt.datetime.now(dt.UTC).date()
        cursor = json.loads(context.cursor) if context.cursor else {}
        scan = scan_landing(storage.landing_uri, dataset, lambda date: out_of_range(date, today))
        ingested = set(context.instance.get_materialized_partitions(AssetKey(asset_name)))
        checker = _ContentChecker(context, asset_name, storage.landing_uri, dataset)
        plan = plan_landing_runs(dataset, scan.days, cursor, ingested, today, checker)
        notes = scan.skipped + plan.notes
        skipped = describe_skipped(notes)
        malformed = [n for n in notes if n.kind in ("not_a_date", "invalid_date", "unlistable")]
        if malformed:
            context.log.warning(f"{dataset}: malformed landing folders, ignored: {describe_skipped(malformed)}")
        new_cursor = json.dumps(plan.cursor, sort_keys=True)
        if not plan.requests:
            reason = f"no new {dataset} days under {storage.landing_uri}"
            return SensorResult(
                skip_reason=SkipReason(f"{reason}; skipped {skipped}" if skipped else reason), cursor=new_cursor
            )
        context.log.info(f"{dataset}: requesting {[r.run_key for r in plan.requests]}")
        if skipped:
            context.log.info(f"{dataset}: skipped {skipped}")
        return SensorResult(run_requests=plan.requests, cursor=new_cursor)

    return _sensor
