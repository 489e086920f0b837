"""Embedded defaults for every setting, derived from ``MLTRAIN_HOME``.

Resources read settings through ``dagster.EnvVar``; ``apply_defaults`` fills in
the variables a user left unset so the same names work everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = ".mltrain"
DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"
DEFAULT_DAGSTER_UI_URL = "http://127.0.0.1:3000"


def mltrain_home() -> Path:
    return Path(os.environ.get("MLTRAIN_HOME", DEFAULT_HOME)).expanduser().resolve()


def default_environment() -> dict[str, str]:
    home = mltrain_home()
    return {
        "MLTRAIN_HOME": str(home),
        "MLTRAIN_LANDING_URI": f"file://{home}/landing",
        "MLTRAIN_STORAGE_URI": f"file://{home}/storage",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow.db",
        "MLTRAIN_MLFLOW_ARTIFACTS_URI": f"file://{home}/mlartifacts",
        # Where a person opens the UIs: the links between Dagster and MLflow point there.
        "MLTRAIN_MLFLOW_UI_URL": DEFAULT_MLFLOW_UI_URL,
        "MLTRAIN_DAGSTER_UI_URL": DEFAULT_DAGSTER_UI_URL,
        "MLTRAIN_COMPUTE": "local",
        "MLTRAIN_SPARK_MASTER": "local[*]",
        "MLTRAIN_SPARK_S3A": "false",
        "MLTRAIN_SPARK_CONF": "{}",
        "MLTRAIN_TRAIN_NODES": "1",
        "MLTRAIN_TRAIN_GPUS_PER_NODE": "0",
        "MLTRAIN_SQL_ENGINE": "spark",
        "MLTRAIN_ENGINE_PARITY": "true",
        "MLTRAIN_AUTOMATION_LOOKBACK_DAYS": "3",
        "MLTRAIN_K8S_IMAGE": "mltrain:latest",
        "MLTRAIN_K8S_NAMESPACE": "mltrain",
        "MLTRAIN_K8S_SERVICE_ACCOUNT": "",
        "MLTRAIN_K8S_ENV_SECRET": "",
        "MLTRAIN_K8S_NODE_SELECTOR": "{}",
        "MLTRAIN_K8S_TRAINING_NODE_SELECTOR": "{}",
        "MLTRAIN_K8S_TRAINING_TOLERATIONS": "[]",
        "DAGSTER_HOME": str(home / "dagster"),
        # Spark otherwise binds the machine's external address; keep traffic on loopback.
        "SPARK_LOCAL_IP": "127.0.0.1",
    }


def apply_defaults() -> dict[str, str]:
    """Set every unset setting to its embedded default; returns the effective values."""
    defaults = default_environment()
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    if tracking.startswith(("http://", "https://")):
        defaults["MLTRAIN_MLFLOW_UI_URL"] = tracking  # a tracking server serves its own UI
    for name, value in defaults.items():
        if not os.environ.get(name):
            os.environ[name] = value
    Path(os.environ["MLTRAIN_HOME"]).mkdir(parents=True, exist_ok=True)
    return {name: os.environ[name] for name in default_environment()}
