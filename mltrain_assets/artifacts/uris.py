"""URIs of the versioned layout: joins, local paths as ``file://``, version hashes and version folders."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from collections.abc import Mapping
from typing import Any

VERSION_LENGTH = 12


def join_uri(base: str, *parts: str) -> str:
    """Join URI segments with ``/`` whatever the scheme.

    Not ``UPath(base) / part``: a URI here is a string recorded in manifests and params and compared as
    such; UPath would build a filesystem per join and normalize ``file:///`` URIs into paths. Reads and
    writes go through fsspec (``filesystem``), where UPath's work is done.
    """
    out = base.rstrip("/")
    for part in parts:
        out = posixpath.join(out, part.strip("/"))
    return out


def normalize_uri(uri_or_path: str) -> str:
    """A plain local path becomes an absolute ``file://`` URI; URIs pass through."""
    if "://" in uri_or_path:
        return uri_or_path.rstrip("/")
    return "file://" + os.path.abspath(uri_or_path)


def compute_version(code_version: str, inputs: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> str:
    """A short, stable hash of the code version, the inputs' data versions and parameters."""
    payload = json.dumps(
        {"code": code_version, "inputs": inputs, "params": params or {}},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:VERSION_LENGTH]


def version_uri(base_uri: str, asset_key: str, partition_path: str, version: str) -> str:
    """``{base}/{asset_key}/{partition_path}/v={version}``."""
    return join_uri(base_uri, asset_key, partition_path, f"v={version}")
