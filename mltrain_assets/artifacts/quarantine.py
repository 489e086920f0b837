"""Quarantine: a committed version that failed verification is moved aside, with the reason, to be rebuilt."""

from __future__ import annotations

import contextlib
import json
import posixpath
import time

from mltrain_assets.artifacts.storage import filesystem
from mltrain_assets.artifacts.uris import join_uri

QUARANTINE_FOLDER = "_quarantine"
QUARANTINE_REASON = "_QUARANTINED.json"


def _quarantine_folder(uri: str) -> str:
    parent, leaf = posixpath.split(uri.rstrip("/"))
    return join_uri(parent, QUARANTINE_FOLDER, leaf)


def quarantine(uri: str, reason: str) -> str:
    """Move a committed version that failed verification aside (kept, with the reason); returns where.

    Its folder becomes free, so the next materialization of the partition rebuilds the version
    instead of reusing it (and failing) forever.
    """
    target = join_uri(_quarantine_folder(uri), time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    fs, path = filesystem(uri)
    _, target_path = filesystem(target)
    with contextlib.suppress(FileNotFoundError):  # another reader may have moved it first
        fs.makedirs(posixpath.dirname(target_path), exist_ok=True)
        fs.mv(path, target_path, recursive=True)
        fs.pipe_file(posixpath.join(target_path, QUARANTINE_REASON), json.dumps({"reason": reason}).encode())
    return target


def quarantine_reason(uri: str) -> str | None:
    """Why the version at ``uri`` was last quarantined, if it was."""
    fs, path = filesystem(_quarantine_folder(uri))
    try:
        moves = sorted(fs.ls(path, detail=False))
    except FileNotFoundError:
        return None
    for move in reversed(moves):
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return json.loads(fs.cat_file(posixpath.join(move, QUARANTINE_REASON)))["reason"]
    return None
