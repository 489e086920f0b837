"""The landing-zone contract: what upstream producers write, and how we list it.

``{landing}/{dataset}/date=YYYY-MM-DD/hour=HH/part-*.parquet``, then
``{landing}/{dataset}/date=YYYY-MM-DD/_SUCCESS`` once the day is complete.

Names starting with ``.`` or ``_`` (Hadoop's hidden files: ``.crc`` checksums, ``_temporary/``,
``_committed_*``) are not data and are ignored, except the day's own ``_SUCCESS``. Every other file
under a day is either a part file (``hour=00`` .. ``hour=23``, directly, ending ``.parquet``) or a
layout problem that ingestion rejects (``problems``).

Listing facts (no file is read but the marker): each file's size and modification time on
``file://``, its ETag on object stores. They fingerprint a day cheaply (``fingerprint``): the
landing sensor compares them every tick; the content fingerprint that versions an ingestion
(``core.ingestion.landing_fingerprint``) reads the bytes only where the store gives no ETag.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from mltrain_assets.artifacts import filesystem, join_uri

SUCCESS_MARKER = "_SUCCESS"
PART_SUFFIX = ".parquet"
_DATE_DIR = re.compile(r"date=(.*)$")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_HOUR_DIR = re.compile(r"hour=(\d{2})$")
_HOUR_LIKE = re.compile(r"hour=")


def day_uri(landing_uri: str, dataset: str, date: str) -> str:
    return join_uri(landing_uri, dataset, f"date={date}")


def hour_uri(landing_uri: str, dataset: str, date: str, hour: int) -> str:
    return join_uri(day_uri(landing_uri, dataset, date), f"hour={hour:02d}")


def success_uri(landing_uri: str, dataset: str, date: str) -> str:
    return join_uri(day_uri(landing_uri, dataset, date), SUCCESS_MARKER)


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _etag(info: dict) -> str | None:
    """The store's content tag of an object, if it has one (S3 ``ETag``; GCS ``md5Hash``)."""
    for key in ("ETag", "etag", "md5Hash"):
        if info.get(key):
            return str(info[key]).strip('"')
    return None


def listing_facts(info: dict) -> dict:
    """What a listing says about one file without reading it: size, and ETag or modification time."""
    facts: dict = {"size": int(info.get("size") or 0)}
    etag = _etag(info)
    if etag:
        facts["etag"] = etag
    else:
        modified = info.get("mtime", info.get("LastModified", info.get("updated")))
        facts["mtime"] = modified if isinstance(modified, (int, float)) else str(modified)
    return facts


def _layout_problem(rel: str) -> str | None:
    """Why a (non-hidden) file under a day is not a part file, or ``None`` for a part file."""
    parts = rel.split("/")
    top = parts[0]
    if len(parts) == 1:
        return f"{rel}: not in an hour=HH folder"
    match = _HOUR_DIR.match(top)
    if not match or int(match.group(1)) > 23:
        if _HOUR_LIKE.match(top):
            return f"{rel}: malformed hour folder {top!r} (expected hour=00 .. hour=23)"
        return f"{rel}: not in an hour=HH folder"
    if len(parts) > 2:
        return f"{rel}: nested below {top} (part files lie directly in hour=HH)"
    if not rel.endswith(PART_SUFFIX):
        return f"{rel}: not a {PART_SUFFIX} file"
    return None


def day_status(landing_uri: str, dataset: str, date: str) -> dict:
    """What has landed for one day, from one listing (only the marker is read).

    ``success``/``marker_sha256``: the ``_SUCCESS`` marker and its content's hash; ``hours``: hours
    with part files; ``files``: part file -> size; ``entries``: every non-hidden file (part files and
    strays) -> listing facts; ``problems``: files breaking the layout, each naming the file;
    ``fingerprint``: the listing fingerprint (marker content + every entry's facts).
    """
    uri = day_uri(landing_uri, dataset, date)
    fs, root = filesystem(uri)
    status: dict = {
        "uri": uri,
        "success": False,
        "marker_sha256": None,
        "hours": [],
        "files": {},
        "entries": {},
        "problems": [],
    }
    fs.invalidate_cache(root)
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        found = {}
    hours = set()
    for name, info in sorted(found.items()):
        if info.get("type") == "directory":
            continue
        rel = posixpath.relpath(name, root)
        if rel == ".":  # the day's "folder" is a file: nothing landed under it
            continue
        if rel == SUCCESS_MARKER:
            try:
                status["marker_sha256"] = hashlib.sha256(fs.cat_file(name)).hexdigest()[:16]
                status["success"] = True
            except FileNotFoundError:  # removed since the listing: not complete
                pass
            continue
        if any(_hidden(part) for part in rel.split("/")):
            continue
        status["entries"][rel] = listing_facts(info)
        problem = _layout_problem(rel)
        if problem:
            status["problems"].append(problem)
            continue
        status["files"][rel] = status["entries"][rel]["size"]
        hours.add(int(rel[len("hour=") : len("hour=") + 2]))
    status["hours"] = sorted(hours)
    status["fingerprint"] = listing_fingerprint(status)
    return status


def listing_fingerprint(status: dict) -> str:
    """The day as its listing shows it: marker content and every file's size + mtime (or ETag). Reads nothing."""
    payload = json.dumps({"marker": status["marker_sha256"], "files": status["entries"]}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LandedDay:
    """A landed day: its date, its ``_SUCCESS`` marker's content hash and its listing fingerprint."""

    dataset: str
    date: str
    marker_sha256: str
    fingerprint: str


@dataclass(frozen=True)
class SkippedFolder:
    """A folder under a dataset that is not a landed day to ingest, and why (``kind`` groups the reasons)."""

    folder: str
    kind: str  # not_a_date | invalid_date | out_of_range | no_marker | unlistable
    reason: str


@dataclass
class LandingScan:
    """Every landed day of a dataset (oldest first) and every folder that is not one, with its reason."""

    days: list[LandedDay] = field(default_factory=list)
    skipped: list[SkippedFolder] = field(default_factory=list)


def scan_landing(
    landing_uri: str, dataset: str, out_of_range: Callable[[dt.date], str | None] | None = None
) -> LandingScan:
    """List ``{landing}/{dataset}``: one listing of the dataset, then one per day in range.

    ``out_of_range(date)`` names why a date is not wanted (before the first partition, after the
    last one), or ``None``; such days are reported, not listed further. A malformed folder (not
    ``date=YYYY-MM-DD``, an impossible date, a file), a day without ``_SUCCESS`` and a day that
    cannot be listed are reported too: none of them stops the other days.
    """
    scan = LandingScan()
    fs, root = filesystem(join_uri(landing_uri, dataset))
    fs.invalidate_cache(root)
    if not fs.exists(root):
        return scan
    for entry in sorted(fs.ls(root, detail=True), key=lambda e: e["name"]):
        folder = posixpath.basename(entry["name"].rstrip("/"))
        if _hidden(folder):
            continue
        match = _DATE_DIR.fullmatch(folder)
        if not match:
            scan.skipped.append(SkippedFolder(folder, "not_a_date", "not a date=YYYY-MM-DD folder"))
            continue
        try:
            if not _ISO_DATE.fullmatch(match.group(1)):
                raise ValueError(match.group(1))
            date = dt.date.fromisoformat(match.group(1))
        except ValueError:
            scan.skipped.append(SkippedFolder(folder, "invalid_date", f"{match.group(1)!r} is not a valid date"))
            continue
        if entry.get("type") not in (None, "directory"):
            scan.skipped.append(SkippedFolder(folder, "not_a_date", "a file, not a folder"))
            continue
        reason = out_of_range(date) if out_of_range else None
        if reason:
            scan.skipped.append(SkippedFolder(folder, "out_of_range", reason))
            continue
        try:
            status = day_status(landing_uri, dataset, date.isoformat())
        except Exception as exc:  # one day that cannot be listed must not hide the others
            scan.skipped.append(SkippedFolder(folder, "unlistable", f"cannot be listed ({type(exc).__name__}: {exc})"))
            continue
        if not status["success"]:
            scan.skipped.append(
                SkippedFolder(
                    folder, "no_marker", f"no {SUCCESS_MARKER} marker yet ({len(status['hours'])}/24 hourly buckets)"
                )
            )
            continue
        scan.days.append(LandedDay(dataset, date.isoformat(), status["marker_sha256"], status["fingerprint"]))
    return scan


def landed_days(landing_uri: str, dataset: str) -> list[LandedDay]:
    """Every day of ``dataset`` whose ``_SUCCESS`` marker exists, oldest first."""
    return scan_landing(landing_uri, dataset).days


HASH_CHUNK = 1 << 20  # bytes read at a time when hashing a part file: memory stays bounded whatever its size


def content_digests(status: dict) -> dict[str, str]:
    """Every non-hidden file of a day (``status`` from ``day_status``) -> a digest of its content.

    The store's ETag where the listing has one (S3: no read); otherwise the SHA-256 of the file's
    bytes, streamed ``HASH_CHUNK`` at a time (``file://``).
    """
    fs, root = filesystem(status["uri"])
    digests = {}
    for rel, facts in sorted(status["entries"].items()):
        if facts.get("etag"):
            digests[rel] = f"etag:{facts['etag']}"
            continue
        digest = hashlib.sha256()
        with fs.open(posixpath.join(root, rel), "rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
        digests[rel] = f"sha256:{digest.hexdigest()}"
    return digests


def bytes_to_hash(status: dict) -> int:
    """What ``content_digests`` reads for this day (0 where the listing has ETags)."""
    return sum(f["size"] for f in status["entries"].values() if not f.get("etag"))
