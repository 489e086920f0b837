"""What the recommendations pipeline serves for a date, as a person reads it (``mltrain summary``)."""

from __future__ import annotations

import os

from mltrain_assets.sdk import LINEAGE_TAGS


def summary(date: str) -> str:
    from mlflow.tracking import MlflowClient

    from mltrain_assets.pipelines.recsys.contract import REGISTERED_MODEL_NAME

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    try:
        version = client.get_model_version_by_alias(REGISTERED_MODEL_NAME, "staging")
    except Exception:
        return f"recommendations, {date}: no `staging` version of {REGISTERED_MODEL_NAME}"
    tags = version.tags
    lineage = sum(1 for k in LINEAGE_TAGS if tags.get(k))
    return (
        f"recommendations, {date}: {REGISTERED_MODEL_NAME} v{version.version} is `staging` "
        f"(AUC {float(tags.get('mltrain.metric.auc', 'nan')):.3f}, partition {tags.get('mltrain.partition')}, "
        f"{lineage}/{len(LINEAGE_TAGS)} lineage tags; {tags.get('mltrain.promotion', '')})"
    )
