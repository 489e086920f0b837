"""MLflow conventions shared by the training workloads (no dagster import)."""

from __future__ import annotations

import os

import mlflow

from mltrain_assets.workloads.common.params import MlflowSettings


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
