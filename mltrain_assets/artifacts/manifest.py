"""The manifest, written last, is the commit: a version folder without one does not exist for readers."""

from __future__ import annotations

import json
import posixpath
from typing import Any

from mltrain_assets.artifacts.quarantine import quarantine_reason
from mltrain_assets.artifacts.storage import _is_connection_error, _unreachable, filesystem

MANIFEST_NAME = "_MANIFEST.json"
MANIFEST_FORMAT = 1


class ArtifactNotCommitted(FileNotFoundError):
    """A reader asked for a version whose manifest has not been written."""


class AlreadyCommitted(FileExistsError):
    """The version was committed by another writer (a concurrent run); ``manifest`` is its commit, to adopt."""

    def __init__(self, uri: str, manifest: dict[str, Any]):
        super().__init__(f"{uri} is already committed; versions are immutable")
        self.uri = uri
        self.manifest = manifest


def read_manifest(uri: str) -> dict[str, Any] | None:
    """The manifest of a committed version, or ``None`` when it does not (yet) exist."""
    fs, path = filesystem(uri)
    target = posixpath.join(path, MANIFEST_NAME)
    try:
        return json.loads(fs.cat_file(target))
    except FileNotFoundError:
        return None
    except Exception as error:
        if _is_connection_error(error):
            raise _unreachable(uri, "reading the manifest of", error) from error
        raise


def require_manifest(uri: str) -> dict[str, Any]:
    manifest = read_manifest(uri)
    if manifest is None:
        quarantined = quarantine_reason(uri)
        if quarantined:
            raise ArtifactNotCommitted(
                f"no committed version at {uri}: it was quarantined ({quarantined}); "
                "materialize its asset partition again to rebuild it"
            )
        raise ArtifactNotCommitted(f"no committed version at {uri} (missing {MANIFEST_NAME})")
    return manifest
