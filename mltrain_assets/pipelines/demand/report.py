"""What the demand pipeline serves for a date, as a person reads it (``mltrain summary``)."""

from __future__ import annotations

import os

from mltrain_assets.sdk import LINEAGE_TAGS


def summary(date: str) -> str:
    from mlflow.tracking import MlflowClient

    from mltrain_assets.pipelines.demand.contract import registered_model_name
    from mltrain_assets.pipelines.demand.spec import CITY_KEYS
    from mltrain_assets.sdk import configured_keys

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    lines = [
        f"demand forecasting, {date}: `staging` per city",
        f"{'model':<26}{'version':>8}{'MAPE':>8}  {'partition':<22}lineage",
    ]
    for city in configured_keys(CITY_KEYS):
        name = registered_model_name(city)
        try:
            version = client.get_model_version_by_alias(name, "staging")
        except Exception:
            lines.append(f"{name:<26}{'-':>8}")
            continue
        tags = version.tags
        lineage = [k for k in LINEAGE_TAGS if tags.get(k)]
        mape = tags.get("mltrain.metric.mape", "")
        mape = f"{float(mape):.3f}" if mape else "-"
        lines.append(
            f"{name:<26}{version.version:>8}{mape:>8}  {tags.get('mltrain.partition', ''):<22}{len(lineage)}/{len(LINEAGE_TAGS)} tags"
        )
    return "\n".join(lines)
