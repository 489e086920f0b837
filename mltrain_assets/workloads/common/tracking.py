"""MLflow conventions shared by the training workloads and the registry (no dagster import).

Tag names have one meaning everywhere (runs and model versions alike):

- ``mltrain.partition``: the Dagster partition key exactly as Dagster writes it
  (``2026-11-27``; ``nyc|2026-11-27`` for date x city). Absent on a run started outside Dagster.
- ``mltrain.date``: the partition's date, ``YYYY-MM-DD``.
- ``mltrain.dagster_run_id`` / ``mltrain.dagster_run_url``: the Dagster run that trained or
  registered it, and its page in the Dagster UI.
- ``mltrain.dagster_asset_url``: the asset partition's page in the Dagster UI.
"""

from __future__ import annotations

import os
from urllib.parse import quote

from mltrain_assets.workloads.common.params import MlflowSettings

PARTITION_TAG = "mltrain.partition"
DATE_TAG = "mltrain.date"
DAGSTER_RUN_ID_TAG = "mltrain.dagster_run_id"
DAGSTER_RUN_URL_TAG = "mltrain.dagster_run_url"
DAGSTER_ASSET_URL_TAG = "mltrain.dagster_asset_url"


def dagster_run_url(ui_url: str, run_id: str) -> str:
    """The run's page in the Dagster UI: ``{ui}/runs/{run_id}``."""
    return f"{ui_url.rstrip('/')}/runs/{run_id}"


def dagster_asset_url(ui_url: str, asset_key: str, partition_key: str = "") -> str:
    """An asset's page in the Dagster UI, on one partition's detail when given.

    ``{ui}/assets/{key path}?view=partitions&partition={key}`` (the asset's Partitions tab with
    that partition selected: its latest materialization and metadata); ``asset_key`` is the user
    string (``a/b`` for a multi-part key).
    """
    path = "/".join(quote(part, safe="") for part in asset_key.split("/"))
    url = f"{ui_url.rstrip('/')}/assets/{path}"
    if partition_key:
        url += f"?view=partitions&partition={quote(partition_key, safe='')}"
    return url


def mlflow_run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def mlflow_run_artifact_url(ui_url: str, experiment_id: str, run_id: str, path: str) -> str:
    """One artifact of a run, opened in the MLflow UI's artifact browser."""
    return f"{mlflow_run_url(ui_url, experiment_id, run_id)}/artifactPath/{path}"


def mlflow_model_version_url(ui_url: str, name: str, version: str) -> str:
    """A registered model version's page in the MLflow UI."""
    return f"{ui_url.rstrip('/')}/#/models/{quote(name, safe='')}/versions/{version}"


def dagster_tags(*, ui_url: str = "", run_id: str = "", asset_key: str = "", partition_key: str = "") -> dict[str, str]:
    """The Dagster launch as tags: id, partition and links (only what is known; none standalone)."""
    tags = {}
    if partition_key:
        tags[PARTITION_TAG] = partition_key
    if run_id:
        tags[DAGSTER_RUN_ID_TAG] = run_id
        if ui_url:
            tags[DAGSTER_RUN_URL_TAG] = dagster_run_url(ui_url, run_id)
    if ui_url and asset_key:
        tags[DAGSTER_ASSET_URL_TAG] = dagster_asset_url(ui_url, asset_key, partition_key)
    return tags


def run_tags(settings: MlflowSettings) -> dict[str, str]:
    """The tags linking a workload's MLflow run to the Dagster launch its params name."""
    return dagster_tags(
        ui_url=settings.dagster_ui_url,
        run_id=settings.dagster_run_id,
        asset_key=settings.dagster_asset_key,
        partition_key=settings.dagster_partition_key,
    )


def use_tracking(settings: MlflowSettings) -> None:
    """Point this workload process at the tracking store its params name."""
    if settings.tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    if settings.artifacts_uri:
        os.environ["MLTRAIN_MLFLOW_ARTIFACTS_URI"] = settings.artifacts_uri


def ensure_experiment(name: str) -> str:
    """Select (creating if needed) experiment ``name``; returns its id.

    With a local store the artifact root goes under ``MLTRAIN_MLFLOW_ARTIFACTS_URI``
    rather than a ``mlruns/`` folder in whatever the working directory is; a
    tracking server decides its own artifact root.
    """
    import mlflow  # here, not at module scope: the control plane imports this module for its tag names

    tracking_uri = mlflow.get_tracking_uri()
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        artifact_root = os.environ.get("MLTRAIN_MLFLOW_ARTIFACTS_URI")
        use_local_root = artifact_root and not tracking_uri.startswith(("http://", "https://"))
        try:
            experiment_id = mlflow.create_experiment(
                name, artifact_location=f"{artifact_root.rstrip('/')}/{name}" if use_local_root else None
            )
        except mlflow.exceptions.MlflowException:
            # Another worker created it between our lookup and create.
            experiment_id = mlflow.get_experiment_by_name(name).experiment_id
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id
