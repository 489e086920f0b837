"""Batch inference from a registered model: top-K per user, deterministic, and actually to the users' taste."""

from __future__ import annotations

import contextlib
import io
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mltrain_assets.artifacts import filesystem, read_manifest, read_table
from mltrain_assets.simulate.interactions import world as simulated_world
from mltrain_assets.workloads.recsys.model import WEIGHTS_FILE, load_model_dir, score
from mltrain_assets.workloads.recsys.params import RecommendParams
from mltrain_assets.workloads.recsys.recommend import RECOMMENDATIONS_FILE, SCHEMA, recommend_to, top_k
from mltrain_assets_tests.workloads.recsys._world import DATE, N_ITEMS, N_USERS, SEED


@pytest.fixture(scope="module")
def registered_version(recsys_world, trained_model):
    summary = trained_model["summary"]
    client = MlflowClient(tracking_uri=recsys_world.mlflow.tracking_uri)
    with contextlib.suppress(MlflowException):  # another test module may have created it
        client.create_registered_model("recommender")
    version = client.create_model_version("recommender", summary["model_artifact_uri"], run_id=summary["mlflow_run_id"])
    return version.version


def _recommend(world, out_uri: str, model_uri: str, **params) -> dict:
    world.run(RecommendParams(model_uri=model_uri, out_uri=out_uri, mlflow=world.mlflow, **params))
    return read_manifest(out_uri)


@pytest.mark.slow
def test_top_k_per_user_from_a_registered_version(recsys_world, registered_version):
    model_uri = f"models:/recommender/{registered_version}"
    out_uri = recsys_world.uri("recommendations", DATE, "v=a")
    manifest = _recommend(recsys_world, out_uri, model_uri, top_k=5, users_limit=200)
    summary = manifest["summary"]
    assert summary["users"] == 200 and summary["rows"] == 1_000 and summary["top_k"] == 5
    assert summary["model_uri"] == model_uri and summary["candidate_items"] == N_ITEMS

    recs = read_table(out_uri, RECOMMENDATIONS_FILE)
    assert recs.schema.equals(SCHEMA)
    df = recs.to_pandas()
    for _, group in df.groupby("user_id"):
        assert group["rank"].tolist() == [1, 2, 3, 4, 5]
        assert group["score"].is_monotonic_decreasing
        assert group["item_id"].is_unique
    assert df["score"].between(0, 1).all()

    # Recommended items suit the users' hidden tastes far better than random items do.
    hidden = simulated_world(N_USERS, N_ITEMS, SEED)
    tastes = hidden.tastes(DATE)
    affinity = np.einsum("nd,nd->n", tastes[df["user_id"]], hidden.item_vec[df["item_id"]])
    baseline = tastes[df["user_id"].unique()] @ hidden.item_vec.T
    assert affinity.mean() > baseline.mean() + 1.5 * baseline.std(axis=1).mean()

    # Reruns are identical.
    again = recsys_world.uri("recommendations", DATE, "v=b")
    _recommend(recsys_world, again, model_uri, top_k=5, users_limit=200)
    assert read_table(again, RECOMMENDATIONS_FILE).equals(recs)


def test_top_k_breaks_ties_towards_the_lower_item_index():
    scores = np.array([[0.1, 0.9, 0.9, 0.5], [0.3, 0.3, 0.3, 0.3]], dtype=np.float32)
    assert top_k(scores, 2).tolist() == [[1, 2], [0, 1]]


@pytest.mark.slow
def test_cold_start_users_and_items_get_valid_scores(trained_model):
    bundle = load_model_dir(trained_model["uri"])
    known_user, known_item = int(bundle.users.ids[0]), int(bundle.items.ids[0])
    frame = pd.DataFrame(
        {
            "user_id": [known_user, 10**12, known_user, 10**12],
            "item_id": [known_item, known_item, 10**12, 10**12],
            "device": ["ios", "web", "android", "tv"],
            "position": [0, 3, 25, 1],
            "hour": [20.0, 1.0, 12.5, 8.0],
        }
    )
    scores = score(bundle, frame)
    assert scores.shape == (4,) and np.isfinite(scores).all() and ((scores > 0) & (scores < 1)).all()


@pytest.mark.slow
def test_model_folders_are_loaded_without_unpickling(trained_model, tmp_path):
    source = filesystem(trained_model["uri"])[1]
    target = tmp_path / "model"
    shutil.copytree(source, target)
    buffer = io.BytesIO()
    torch.save({"payload": shutil.copytree}, buffer)  # a pickled Python callable, not a tensor
    (target / WEIGHTS_FILE).write_bytes(buffer.getvalue())
    with pytest.raises(Exception, match=r"[Ww]eights only load failed|Unsupported global"):
        load_model_dir(str(target))


def test_an_unknown_scoring_context_is_refused_before_any_model_is_loaded(tmp_path):
    with pytest.raises(ValueError, match=r"device must be one of \['ios', 'android', 'web'\], got 'tv'"):
        recommend_to("models:/recommender/1", str(tmp_path / "out"), device="tv")
