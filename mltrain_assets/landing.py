"""The landing-zone contract: what upstream producers write, and how we list it.

``{landing}/{dataset}/date=YYYY-MM-DD/hour=HH/part-*.parquet``, then
``{landing}/{dataset}/date=YYYY-MM-DD/_SUCCESS`` once the day is complete.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass

from mltrain_assets.artifacts import filesystem, join_uri

SUCCESS_MARKER = "_SUCCESS"
DATASETS = ("rides", "interactions")
_DATE_DIR = re.compile(r"date=(\d{4}-\d{2}-\d{2})$")
_HOUR_DIR = re.compile(r"hour=(\d{2})$")


def day_uri(landing_uri: str, dataset: str, date: str) -> str:
    return join_uri(landing_uri, dataset, f"date={date}")


def hour_uri(landing_uri: str, dataset: str, date: str, hour: int) -> str:
    return join_uri(day_uri(landing_uri, dataset, date), f"hour={hour:02d}")


def success_uri(landing_uri: str, dataset: str, date: str) -> str:
    return join_uri(day_uri(landing_uri, dataset, date), SUCCESS_MARKER)


@dataclass(frozen=True)
class LandedDay:
    """A landed day: its date and a fingerprint of its ``_SUCCESS`` marker's content."""

    dataset: str
    date: str
    marker_sha256: str


def landed_days(landing_uri: str, dataset: str) -> list[LandedDay]:
    """Every day of ``dataset`` whose ``_SUCCESS`` marker exists, oldest first."""
    fs, root = filesystem(join_uri(landing_uri, dataset))
    if not fs.exists(root):
        return []
    days = []
    for entry in sorted(fs.ls(root, detail=False)):
        match = _DATE_DIR.search(entry.rstrip("/"))
        if not match:
            continue
        marker = posixpath.join(entry, SUCCESS_MARKER)
        try:
            content = fs.cat_file(marker)
        except FileNotFoundError:
            continue
        days.append(LandedDay(dataset, match.group(1), hashlib.sha256(content).hexdigest()[:16]))
    return days


def day_status(landing_uri: str, dataset: str, date: str) -> dict:
    """What has landed for one day: marker present, hours present, part files with sizes."""
    fs, root = filesystem(day_uri(landing_uri, dataset, date))
    status = {"success": False, "marker_sha256": None, "hours": [], "files": {}}
    if not fs.exists(root):
        return status
    try:
        status["marker_sha256"] = hashlib.sha256(fs.cat_file(posixpath.join(root, SUCCESS_MARKER))).hexdigest()[:16]
        status["success"] = True
    except FileNotFoundError:
        pass
    for entry in sorted(fs.ls(root, detail=False)):
        match = _HOUR_DIR.search(entry.rstrip("/"))
        if not match:
            continue
        parts = sorted(p for p in fs.ls(entry, detail=True) if p["name"].endswith(".parquet"))
        if parts:
            status["hours"].append(int(match.group(1)))
        for part in sorted(parts, key=lambda p: p["name"]):
            rel = posixpath.relpath(part["name"], root)
            status["files"][rel] = int(part.get("size") or 0)
    return status
