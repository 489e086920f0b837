"""``ArtifactRef``: what steps pass to each other, stored relative to the store root."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from mltrain_assets.artifacts.uris import join_uri


@dataclass(frozen=True)
class ArtifactRef:
    """What steps pass to each other: where a committed version lives, never the data."""

    asset_key: str
    partition_key: str
    version: str
    uri: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ArtifactRef:
        return cls(**json.loads(text))

    def file_uri(self, name: str) -> str:
        return join_uri(self.uri, name)

    def relative_to(self, root: str) -> ArtifactRef:
        """The reference as stored: a version under ``root`` by its path below it (so a moved store still resolves)."""
        prefix = root.rstrip("/") + "/"
        if not self.uri.startswith(prefix):
            return self
        return dataclasses.replace(self, uri=self.uri[len(prefix) :])

    def resolved(self, root: str) -> ArtifactRef:
        """The reference as used: a stored relative path made absolute under today's ``root``."""
        if "://" in self.uri or ":" in self.uri.split("/", 1)[0]:
            return self  # absolute (file://, s3://) or not a storage path (models:/...)
        return dataclasses.replace(self, uri=join_uri(root, self.uri))
