"""The MLflow tracking server and model registry, as the control plane sees them."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dagster import ConfigurableResource

from mltrain_assets.resources.registry_errors import AliasMoved, RegistryError, RegistryUnavailable
from mltrain_assets.settings import DEFAULT_DAGSTER_UI_URL, DEFAULT_MLFLOW_UI_URL
from mltrain_assets.workloads.common.tracking import (
    DAGSTER_ASSET_URL_TAG,
    DAGSTER_RUN_ID_TAG,
    DAGSTER_RUN_URL_TAG,
    DATE_TAG,
    PARTITION_TAG,
    TrackingServerUnavailable,
    bound_http_retries,
    dagster_tags,
    is_http_uri,
    mlflow_model_version_url,
    mlflow_run_artifact_url,
    mlflow_run_url,
    tracking_errors,
)

# MLflow costs ~1 s to import: it is imported inside the methods that call the registry, so every
# run and step process that loads the definitions without touching the registry skips it.
if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

LINEAGE_KEY_TAG = "mltrain.artifact_version"
CODE_COMMIT_TAG = "mltrain.code_commit"
SNAPSHOT_ID_TAG = "mltrain.data_snapshot_id"
SNAPSHOT_URI_TAG = "mltrain.data_snapshot_uri"
# The full data snapshot (input URIs and versions, and what those were built from), as an
# artifact of the model's training run, named by its id: one click from the version page, kept
# with the model, never overwritten.
SNAPSHOT_FOLDER = "lineage"

# The op-concurrency pool of the registration steps (``pool=REGISTRY_POOL`` on every registered_*
# asset): one slot (``instance/pools.py`` DEFAULT_POOL_LIMITS, written by ``mltrain init``, never by a run),
# so registrations and promotions never overlap on one instance, whoever launched them.
REGISTRY_POOL = "registry"

T = TypeVar("T")


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

    Every call has a bounded wait (``bound_http_retries``: MLflow's own client retries, set for this
    process unless the environment sets them). A server that stays unreachable raises
    ``RegistryUnavailable`` naming its URL; an error answer to a lookup raises ``RegistryError``
    (never "not found"). Exactly one version per lineage (``mltrain.artifact_version``): see ``register``.
    """

    tracking_uri: str
    # Where a person opens the UIs (MLTRAIN_MLFLOW_UI_URL, MLTRAIN_DAGSTER_UI_URL); see mlflow_ui/dagster_ui.
    ui_url: str = ""
    dagster_ui_url: str = ""

    @cached_property
    def client(self) -> MlflowClient:
        from mlflow.tracking import MlflowClient

        bound_http_retries()
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def _call(self, action: str, call: Callable[[], T]) -> T:
        """``call()``; a server that stayed unreachable for the retry budget raises ``RegistryUnavailable``."""
        try:
            with tracking_errors(self.tracking_uri, action):
                return call()
        except TrackingServerUnavailable as exc:
            raise RegistryUnavailable(exc) from None

    def _store(self) -> str:
        kind = "MLflow tracking server" if is_http_uri(self.tracking_uri) else "MLflow store"
        return f"{kind} {self.tracking_uri.rstrip('/')}"

    def lineage_versions(self, name: str, lineage_key: str) -> list[str]:
        """Every version of ``name`` tagged with this lineage, oldest first; a failed lookup raises."""
        from mlflow.exceptions import MlflowException

        query = f"name = '{name}' and tags.`{LINEAGE_KEY_TAG}` = '{lineage_key}'"
        try:
            versions = self._call(
                f"searching versions of {name} for lineage {lineage_key}",
                lambda: self.client.search_model_versions(query),
            )
        except MlflowException as exc:
            raise RegistryError(
                f"{self._store()} failed to look up versions of {name} for lineage {lineage_key} "
                f"({exc.error_code}: {str(exc)[:300]}); refusing to register without knowing what exists",
                self.tracking_uri,
                allow_retries=not is_http_uri(self.tracking_uri),
            ) from None
        return sorted((str(v.version) for v in versions), key=int)

    def find_version(self, name: str, lineage_key: str) -> str | None:
        """The version of ``name`` registered for this lineage, if any (the oldest, should there be several)."""
        return next(iter(self.lineage_versions(name, lineage_key)), None)

    def register(
        self,
        name: str,
        model_uri: str,
        run_id: str | None,
        lineage_key: str,
        tags: dict[str, str],
        description: str | None = None,
    ) -> RegisteredVersion:
        """Register ``model_uri`` under ``name`` unless this lineage already is: one version per lineage.

        A ``runs:/<run>/<name>`` URI naming a model logged by that run is registered as the
        logged model itself (``models:/m-<id>``), so the version links to it in the MLflow UI.

        Each step can be re-run after a crash anywhere:

        1. look up the lineage: an error is an error (``RegistryError``/``RegistryUnavailable``);
        2. create the registered model (already existing is fine);
        3. create the version *with* its lineage tag (``tags=`` at creation: one write; there is no
           window where a version exists untagged and a retry cannot find it);
        4. settle: look the lineage up again; the oldest version is the lineage's, and any younger
           duplicate (two registrations racing past step 1, or the client retrying a create whose
           answer was lost) is deleted, unless an alias already points at it.
        """
        from mlflow.exceptions import MlflowException

        existing = self.find_version(name, lineage_key)
        if existing is not None:
            return RegisteredVersion(name, existing, False, model_uri, run_id)
        try:
            self._call(f"creating registered model {name}", lambda: self.client.create_registered_model(name))
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
        all_tags = {**{k: str(v) for k, v in tags.items()}, LINEAGE_KEY_TAG: lineage_key}
        model_uri = self.logged_model_uri(model_uri)
        # MLflow 3 logged models ("models:/m-<id>") must name their model id to a tracking server.
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        version = self._call(
            f"creating a version of {name}",
            lambda: self.client.create_model_version(
                name=name, source=model_uri, run_id=run_id, tags=all_tags, model_id=model_id, description=description
            ),
        )
        ours = str(version.version)
        canonical = self.settle_lineage(name, lineage_key)
        return RegisteredVersion(name, canonical or ours, canonical in (None, ours), model_uri, run_id)

    def settle_lineage(self, name: str, lineage_key: str) -> str | None:
        """Keep the lineage's oldest version; delete younger duplicates no alias points at. Returns the oldest."""
        versions = self.lineage_versions(name, lineage_key)
        if len(versions) <= 1:
            return next(iter(versions), None)
        canonical, *duplicates = versions
        aliased = set(self.aliases(name).values())
        for duplicate in duplicates:
            if duplicate in aliased:
                continue  # someone serves it; leave it for a person to resolve rather than pull it from under them
            self.delete_version(name, duplicate)
        return canonical

    def delete_version(self, name: str, version: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._call(f"deleting duplicate {name} v{version}", lambda: self.client.delete_model_version(name, version))
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" not in str(exc.error_code):  # a concurrent settle deleted it first
                raise

    def aliases(self, name: str) -> dict[str, str]:
        """``{alias: version}`` of ``name`` (``search_model_versions`` leaves ``aliases`` empty)."""
        model = self._call(f"reading aliases of {name}", lambda: self.client.get_registered_model(name))
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}

    def logged_model_uri(self, model_uri: str) -> str:
        """``models:/m-<id>`` for a ``runs:/<run>/<name>`` URI whose run logged a model ``name``; else unchanged.

        A run that only holds raw artifacts under that path (older recommender versions) keeps its URI.
        """
        from mlflow.exceptions import MlflowException

        if not model_uri.startswith("runs:/"):
            return model_uri
        run_id, _, name = model_uri.removeprefix("runs:/").strip("/").partition("/")
        if not name or "/" in name:
            return model_uri
        try:
            run = self._call(f"reading run {run_id}", lambda: self.client.get_run(run_id))
            models = self._call(
                f"searching the models run {run_id} logged",
                lambda: self.client.search_logged_models(
                    experiment_ids=[run.info.experiment_id],
                    filter_string=f"name = '{name}' AND source_run_id = '{run_id}'",
                ),
            )
        except MlflowException:
            # An answer, not an outage (an unreachable server raised above): no logged model to link.
            return model_uri
        matched = [m for m in models if m.source_run_id == run_id]
        return f"models:/{matched[0].model_id}" if matched else model_uri

    def record_snapshot(self, run_id: str, snapshot: dict[str, Any]) -> str:
        """Store the full data snapshot as an artifact of the model's run; returns its ``runs:/`` URI."""
        path = snapshot_artifact(snapshot)
        text = json.dumps(snapshot, indent=2, sort_keys=True)
        self._call(f"storing the data snapshot of run {run_id}", lambda: self.client.log_text(run_id, text, path))
        return f"runs:/{run_id}/{path}"

    def set_description(self, name: str, version: str, description: str) -> None:
        self._call(
            f"describing {name} v{version}",
            lambda: self.client.update_model_version(name, version, description=description),
        )

    def description(self, name: str, version: str) -> str:
        return (
            self._call(f"reading {name} v{version}", lambda: self.client.get_model_version(name, version)).description
            or ""
        )

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version ``alias`` points at; ``None`` only when the model or the alias does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            version = self._call(
                f"reading `{alias}` of {name}", lambda: self.client.get_model_version_by_alias(name, alias)
            )
        except MlflowException as exc:
            code, text = str(exc.error_code), str(exc)
            if "RESOURCE_DOES_NOT_EXIST" in code or ("INVALID_PARAMETER_VALUE" in code and "not found" in text):
                return None
            raise RegistryError(
                f"{self._store()} failed to read `{alias}` of {name} ({code}: {text[:300]})",
                self.tracking_uri,
                allow_retries=not is_http_uri(self.tracking_uri),
            ) from None
        return str(version.version)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call(
            f"setting `{alias}` of {name} to v{version}",
            lambda: self.client.set_registered_model_alias(name, alias, version),
        )

    def compare_and_set_alias(self, name: str, alias: str, expected: str | None, new: str) -> None:
        """Point ``alias`` at ``new`` only if it still points at ``expected`` (the version a decision read).

        MLflow aliases are last-writer-wins, with no compare-and-set: this reads, compares, sets and
        reads again. The registry pool (one slot) makes it the only writer among this instance's
        runs; the two reads detect a writer outside it (another instance, a person in the MLflow UI):
        ``AliasMoved`` before the set (nothing written) or after it (overwritten by them).
        """
        actual = self.alias_version(name, alias)
        if actual != expected:
            raise AliasMoved(name, alias, expected, actual)
        self.set_alias(name, alias, new)
        after = self.alias_version(name, alias)
        if after != new:
            raise AliasMoved(name, alias, new, after)

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        return dict(self._call(f"reading {name} v{version}", lambda: self.client.get_model_version(name, version)).tags)

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._call(f"tagging {name} v{version}", lambda: self.client.set_model_version_tag(name, version, key, value))

    # ------------------------------------------------------------------ links a person can open

    @property
    def mlflow_ui(self) -> str:
        """The MLflow UI: ``ui_url``, else an http(s) tracking server itself, else the environment's setting."""
        if self.ui_url:
            return self.ui_url.rstrip("/")
        if self.tracking_uri.startswith(("http://", "https://")):
            return self.tracking_uri.rstrip("/")
        return (os.environ.get("MLTRAIN_MLFLOW_UI_URL") or DEFAULT_MLFLOW_UI_URL).rstrip("/")

    @property
    def dagster_ui(self) -> str:
        """The Dagster UI: ``dagster_ui_url``, else the environment's setting."""
        configured = self.dagster_ui_url or os.environ.get("MLTRAIN_DAGSTER_UI_URL") or DEFAULT_DAGSTER_UI_URL
        return configured.rstrip("/")

    def run_link(self, run_id: str) -> str:
        """The run's page in the MLflow UI."""
        run = self._call(f"reading run {run_id}", lambda: self.client.get_run(run_id))
        return mlflow_run_url(self.mlflow_ui, run.info.experiment_id, run_id)

    def run_artifact_link(self, run_id: str, path: str) -> str:
        run = self._call(f"reading run {run_id}", lambda: self.client.get_run(run_id))
        return mlflow_run_artifact_url(self.mlflow_ui, run.info.experiment_id, run_id, path)

    def version_link(self, name: str, version: str) -> str:
        """The registered model version's page in the MLflow UI."""
        return mlflow_model_version_url(self.mlflow_ui, name, version)


# Every registered version carries these (same keys for all models); see lineage_tags.
LINEAGE_TAGS = (
    CODE_COMMIT_TAG,
    SNAPSHOT_ID_TAG,
    SNAPSHOT_URI_TAG,
    DAGSTER_RUN_ID_TAG,
    DAGSTER_RUN_URL_TAG,
    DAGSTER_ASSET_URL_TAG,
    PARTITION_TAG,
    DATE_TAG,
)


def snapshot_id(snapshot: dict[str, Any]) -> str:
    """A short content hash of a data snapshot: equal snapshots, equal ids."""
    return hashlib.sha256(json.dumps(snapshot, sort_keys=True).encode()).hexdigest()[:12]


def snapshot_artifact(snapshot: dict[str, Any]) -> str:
    """The run-relative artifact path of a snapshot: ``lineage/data_snapshot-<id>.json``."""
    return f"{SNAPSHOT_FOLDER}/data_snapshot-{snapshot_id(snapshot)}.json"


def run_artifact_path(runs_uri: str) -> str:
    """``lineage/x.json`` of ``runs:/<run id>/lineage/x.json``."""
    return runs_uri.removeprefix("runs:/").partition("/")[2]


def lineage_tags(
    *,
    code_commit_sha: str,
    data_snapshot: dict[str, Any],
    run_id: str,
    partition: str,
    date: str | None = None,
    data_snapshot_uri: str = "",
    dagster_ui_url: str = "",
    asset_key: str = "",
) -> dict[str, str]:
    """The lineage every registered version carries (short values: the full snapshot is an artifact)."""
    tags = {
        CODE_COMMIT_TAG: code_commit_sha,
        SNAPSHOT_ID_TAG: snapshot_id(data_snapshot),
        SNAPSHOT_URI_TAG: data_snapshot_uri,
        DATE_TAG: date or date_in(partition) or "",
        **dagster_tags(ui_url=dagster_ui_url, run_id=run_id, asset_key=asset_key, partition_key=partition),
    }
    return {k: tags[k] for k in LINEAGE_TAGS if tags.get(k)}


def date_in(partition: str) -> str | None:
    """The date inside a partition key: ``2026-11-27`` or a multi key like ``nyc|2026-11-27``."""
    for part in partition.split("|"):
        if len(part) == 10 and part[4] == "-" and part[7] == "-":
            return part
    return None
