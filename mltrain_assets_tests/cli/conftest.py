"""The upstream references and landed data ``mltrain manifests`` renders a date's steps from."""

import json
import os
from pathlib import Path

import pytest

from mltrain_assets.artifacts import MANIFEST_NAME, ArtifactRef, join_uri
from mltrain_assets.simulate import simulate
from mltrain_assets.workloads.common.dates import shift

DATE = "2026-06-10"
CITY = "nyc"


def _write_ref(storage: str, asset: str, partition_path: str, **metadata) -> None:
    path = Path(join_uri(storage, "_refs", asset, f"{partition_path}.json").removeprefix("file://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    uri = join_uri(storage, asset, partition_path, "v=0123456789ab")
    partition = partition_path.replace("/", "|")
    path.write_text(ArtifactRef(asset, partition, "0123456789ab", uri, {"rows": 1, **metadata}).to_json())
    # The version it points to is committed (readers refuse references to versions that are not).
    version = Path(uri.removeprefix("file://"))
    version.mkdir(parents=True, exist_ok=True)
    (version / MANIFEST_NAME).write_text(json.dumps({"files": {}, "rows": 1, "summary": metadata}))


@pytest.fixture
def upstream(mltrain_home):
    """References for every upstream partition the steps of DATE read, and DATE landed (no data work)."""
    storage = os.environ["MLTRAIN_STORAGE_URI"]
    for k in range(35):
        _write_ref(storage, "ride_events", shift(DATE, -k))
        _write_ref(storage, "city_hour_aggregates", shift(DATE, -k))
    for k in range(15):
        _write_ref(storage, "user_interactions", shift(DATE, -k))
    _write_ref(storage, "city_demand_features", DATE)
    _write_ref(storage, "city_demand_model", f"{CITY}/{DATE}", mape=0.1, mlflow_model_uri="models:/m-1")
    _write_ref(
        storage, "registered_demand_model", f"{CITY}/{DATE}", model_name="demand-forecast-nyc", served_version="3"
    )
    _write_ref(storage, "interaction_embeddings", DATE)
    _write_ref(storage, "recommender_model", DATE, auc=0.9, model_artifact_uri="runs:/r/model")
    _write_ref(storage, "registered_recommender", DATE, model_name="recommender", served_version="2")
    landing = os.environ["MLTRAIN_LANDING_URI"]
    simulate("rides", landing, DATE, DATE, volume=2_000, cities=[CITY])
    simulate("interactions", landing, DATE, DATE, volume=2_000)
    return storage
