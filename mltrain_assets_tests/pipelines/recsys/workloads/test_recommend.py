"""Batch inference from a registered model: top-K per user, deterministic, and actually to the users' taste."""

from __future__ import annotations

import contextlib
import io
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mltrain_assets.artifacts import filesystem, read_manifest, read_table
from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.pipelines.recsys.params import RecommendParams
from mltrain_assets.pipelines.recsys.simulate import world as simulated_world
from mltrain_assets.pipelines.recsys.workloads.features import EncodedRows
from mltrain_assets.pipelines.recsys.workloads.model import (
    WEIGHTS_FILE,
    ModelBundle,
    RecsysNet,
    default_config,
    load_model_dir,
    make_bundle,
    score,
    score_rows,
)
from mltrain_assets.pipelines.recsys.workloads.recommend import (
    EXHAUSTIVE,
    RECOMMENDATIONS_FILE,
    SCHEMA,
    TWO_STAGE,
    CandidateScorer,
    popularity_order,
    recommend,
    recommend_to,
    retrieval_mode,
    retrieve_candidates,
    top_k,
    top_k_probabilities,
)
from mltrain_assets_tests.pipelines.recsys.workloads._world import DATE, N_ITEMS, N_USERS, SEED


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
    # 300 items fit the candidate budget: every item is scored for every user, as before retrieval existed.
    assert summary["mode"] == EXHAUSTIVE and summary["candidate_budget"] == contract.RECOMMEND_CANDIDATES

    recs = read_table(out_uri, RECOMMENDATIONS_FILE)
    assert recs.schema.equals(SCHEMA)
    df = recs.to_pandas()
    for _, group in df.groupby("user_id"):
        assert group["rank"].tolist() == [1, 2, 3, 4, 5]
        assert group["score"].is_monotonic_decreasing
        assert group["item_id"].is_unique
    assert df["score"].between(0, 1).all()

    # Recommended items suit the users' hidden tastes far better than random items do (well over a standard
    # deviation; the factors are a week older than the training window, D-14..D-8, so tastes have drifted since).
    hidden = simulated_world(N_USERS, N_ITEMS, SEED)
    tastes = hidden.tastes(DATE)
    affinity = np.einsum("nd,nd->n", tastes[df["user_id"]], hidden.item_vec[df["item_id"]])
    baseline = tastes[df["user_id"].unique()] @ hidden.item_vec.T
    assert affinity.mean() > baseline.mean() + 1.25 * baseline.std(axis=1).mean()

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
        recommend_to(RecommendParams(model_uri="models:/recommender/1", out_uri=str(tmp_path / "out"), device="tv"))


# --------------------------------------------------------------------------- two-stage retrieval (fast)

RANK = 6


def random_bundle(n_users: int, n_items: int, seed: int = 0) -> ModelBundle:
    """A network with random weights and standardization over random factors; every 7th user has no vector."""
    rng = np.random.default_rng(seed)

    def table(n: int, id_column: str, cold_every: int) -> pa.Table:
        vectors = rng.standard_normal((n, RANK)).astype(np.float32)
        vectors[::cold_every] = 0.0
        impressions = rng.integers(1, 200, n)
        return pa.table(
            {
                id_column: pa.array(np.arange(n) * 5 + 3, pa.int64()),
                "factors": pa.array(list(vectors), pa.list_(pa.float32())),
                "impressions": impressions,
                "clicks": rng.integers(0, impressions + 1),
            }
        )

    torch.manual_seed(seed)
    config = default_config(RANK, global_ctr=0.3)
    model = RecsysNet.from_config(config)
    model.set_standardization(torch.randn(model.feature_mean.shape) * 0.3, torch.rand(model.feature_std.shape) + 0.5)
    return make_bundle(model, config, table(n_users, "user_id", 7), table(n_items, "item_id", 1_000_000))


def test_the_one_pass_top_k_of_probabilities_orders_and_breaks_ties_like_the_stable_sort():
    rng = np.random.default_rng(4)
    probabilities = rng.choice(np.array([0.0, 0.25, 0.5, 0.5000001, 1.0], np.float32), size=(200, 30))
    probabilities[:50] = rng.random((50, 30), dtype=np.float32)
    expected = top_k(probabilities, 7)
    assert torch.equal(top_k_probabilities(torch.from_numpy(probabilities), 7), torch.from_numpy(expected))


def test_the_factorized_scorer_gives_the_networks_probabilities():
    bundle = random_bundle(40, 300)
    user_rows = torch.arange(1, 41)
    item_rows = torch.randint(1, 301, (40, 25))
    factorized = CandidateScorer(bundle, device_code=1, position=2, hour=20.0)(user_rows, item_rows)
    rows = EncodedRows(
        user_rows.repeat_interleave(25).int(),
        item_rows.reshape(-1).int(),
        torch.full((1_000,), 1, dtype=torch.int8),
        torch.full((1_000,), 2, dtype=torch.int8),
        torch.full((1_000,), 20.0),
    )
    network = torch.from_numpy(score_rows(bundle, rows)).reshape(40, 25)
    torch.testing.assert_close(factorized, network, rtol=0, atol=1e-6)


def test_the_catalogue_size_decides_the_mode():
    assert retrieval_mode(contract.RECOMMEND_CANDIDATES) == EXHAUSTIVE  # today's 1k items
    assert retrieval_mode(contract.RECOMMEND_CANDIDATES + 1) == TWO_STAGE
    with pytest.raises(ValueError, match="mode must be 'exhaustive' or 'two_stage', got 'all'"):
        recommend(random_bundle(5, 20), 3, mode="all")


def test_retrieval_is_the_popular_items_plus_the_exact_best_dot_products():
    bundle = random_bundle(30, 500)
    items = bundle.items.vectors[1:]
    by_popularity = torch.from_numpy(popularity_order(bundle.items))
    users = bundle.users.vectors[1:]
    chosen = retrieve_candidates(users, items, by_popularity, candidates=60, popular=10)
    assert chosen.shape == (30, 60) and bool((chosen.diff(dim=1) > 0).all())  # distinct, ascending
    popular = set(by_popularity[:10].tolist())
    for user, row in zip(users, chosen, strict=True):
        picked = set(row.tolist())
        assert popular <= picked
        if not user.any():  # no vector: the 60 most clicked items
            assert picked == set(by_popularity[:60].tolist())
            continue
        dots = (items @ user).numpy()
        dots[list(popular)] = -np.inf
        assert picked - popular == set(np.argsort(-dots, kind="stable")[:50].tolist())  # exact, brute force
    # Most clicked first; ties broken by impressions, then by the smaller id.
    clicks, impressions = bundle.items.clicks[by_popularity], bundle.items.impressions[by_popularity]
    assert (np.diff(clicks) <= 0).all()
    assert all(impressions[i] >= impressions[i + 1] for i in range(len(clicks) - 1) if clicks[i] == clicks[i + 1])


def test_two_stage_over_a_budget_holding_every_item_gives_the_exhaustive_top_k():
    bundle = random_bundle(50, 400)
    exhaustive = recommend(bundle, 10, mode=EXHAUSTIVE)
    two_stage = recommend(bundle, 10, candidates=400, popular=30, mode=TWO_STAGE)
    assert two_stage.column("user_id").equals(exhaustive.column("user_id"))
    assert two_stage.column("item_id").equals(exhaustive.column("item_id"))
    np.testing.assert_allclose(two_stage.column("score").to_numpy(), exhaustive.column("score").to_numpy(), atol=1e-6)
    # The default budget holds this catalogue: exhaustive, whatever the candidates could be.
    assert recommend(bundle, 10).equals(exhaustive)


def test_two_stage_gives_the_same_output_on_any_number_of_threads():
    bundle = random_bundle(300, 2_000)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = recommend(bundle, 5, candidates=100, popular=10)
        torch.set_num_threads(3)
        pooled = recommend(bundle, 5, candidates=100, popular=10)
        assert torch.get_num_threads() == 3  # the pool's single-threaded ops leave the setting as it was
    finally:
        torch.set_num_threads(threads)
    assert alone.equals(pooled) and alone.num_rows == 1_500


@pytest.mark.slow
def test_two_stage_recalls_the_exhaustive_top_k_of_the_trained_model_on_a_catalogue_over_budget(trained_model):
    bundle = load_model_dir(trained_model["uri"])
    assert len(bundle.items.ids) == N_ITEMS  # 300 items, 60 candidates: a fifth of the catalogue
    exhaustive = recommend(bundle, 10, users_limit=500, mode=EXHAUSTIVE).column("item_id").to_numpy().reshape(-1, 10)
    retrieved = recommend(bundle, 10, users_limit=500, candidates=60, popular=10, mode=TWO_STAGE)
    retrieved = retrieved.column("item_id").to_numpy().reshape(-1, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(retrieved, exhaustive, strict=True)])
    assert recall > 0.9
