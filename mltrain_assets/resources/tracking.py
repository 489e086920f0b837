"""The MLflow tracking server and model registry, as the control plane sees them."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from dagster import ConfigurableResource
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

LINEAGE_KEY_TAG = "mltrain.artifact_version"


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    created: bool
    source: str
    run_id: str | None


def code_commit() -> str:
    """The commit of the running code: ``MLTRAIN_CODE_COMMIT`` (set in images) or the git checkout."""
    if os.environ.get("MLTRAIN_CODE_COMMIT"):
        return os.environ["MLTRAIN_CODE_COMMIT"]
    repo = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True
        ).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class ModelRegistry(ConfigurableResource):
    """Registers model versions with lineage tags and moves aliases (``staging``).

    Versions are strings whatever the store: a local (sqlite) store returns ints, a server strings,
    and a decision replayed from a tag must compare equal to one made now.
    """

    tracking_uri: str

    @cached_property
    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def find_version(self, name: str, lineage_key: str) -> str | None:
        """The version of ``name`` already registered for this lineage, if any."""
        try:
            versions = self.client.search_model_versions(
                f"name = '{name}' and tags.`{LINEAGE_KEY_TAG}` = '{lineage_key}'"
            )
        except MlflowException:
            return None
        return min((str(v.version) for v in versions), key=int, default=None)

    def register(
        self, name: str, model_uri: str, run_id: str | None, lineage_key: str, tags: dict[str, str]
    ) -> RegisteredVersion:
        """Register ``model_uri`` under ``name`` unless this lineage already is (idempotent)."""
        existing = self.find_version(name, lineage_key)
        if existing is not None:
            return RegisteredVersion(name, existing, False, model_uri, run_id)
        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
        all_tags = {**{k: str(v) for k, v in tags.items()}, LINEAGE_KEY_TAG: lineage_key}
        # MLflow 3 logged models ("models:/m-<id>") must name their model id to a tracking server.
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        version = self.client.create_model_version(
            name=name, source=model_uri, run_id=run_id, tags=all_tags, model_id=model_id
        )
        return RegisteredVersion(name, str(version.version), True, model_uri, run_id)

    def alias_version(self, name: str, alias: str) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(name, version).tags)

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(name, version, key, value)

    def run_link(self, run_id: str) -> str:
        """A link a person can open: the server UI for http stores, else the run id."""
        if self.tracking_uri.startswith(("http://", "https://")):
            run = self.client.get_run(run_id)
            return f"{self.tracking_uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
        return f"mlflow run {run_id} in {self.tracking_uri}"


LINEAGE_TAGS = ("mltrain.code_commit", "mltrain.data_snapshot", "mltrain.dagster_run_id", "mltrain.partition")


def lineage_tags(*, code_commit_sha: str, data_snapshot: dict, run_id: str, partition: str) -> dict[str, str]:
    """The lineage every registered version carries (same keys for all models)."""
    values = (code_commit_sha, json.dumps(data_snapshot, sort_keys=True), run_id, partition)
    return dict(zip(LINEAGE_TAGS, values, strict=True))
