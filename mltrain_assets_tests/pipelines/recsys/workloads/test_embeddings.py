"""Spark ALS embeddings: deterministic fits, shapes, signal, and clear failures for inputs Spark cannot read."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from mltrain_assets.artifacts import ArtifactNotCommitted, normalize_uri, read_manifest, read_table
from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.pipelines.recsys.contract import INTERACTIONS_SCHEMA, ITEM_FACTORS_FILE, USER_FACTORS_FILE
from mltrain_assets.pipelines.recsys.workloads.als import AlsPlan, als_plan, factors_table
from mltrain_assets.pipelines.recsys.workloads.embeddings import checkpoint_dir_for, fit_embeddings, spark_events_path
from mltrain_assets.workloads.common.spark import SparkSettings, spark_session
from mltrain_assets.workloads.ingest.params import EVENTS_FILE
from mltrain_assets_tests.pipelines.recsys.workloads._world import DATE

LOCAL = SparkSettings(master="local[2]")


@pytest.fixture(scope="module")
def spark():
    session, owned = spark_session(LOCAL, "mltrain-tests")
    yield session
    if owned:
        session.stop()


@pytest.mark.slow
def test_two_fits_of_the_same_window_give_equal_factors(spark, recsys_world):
    # One day is enough to show the fit is a function of its inputs (the full window: the embeddings workload test).
    window = recsys_world.train_uris[-1:]
    paths = [spark_events_path(uri, LOCAL) for uri in window]
    first = fit_embeddings(spark, paths, rank=8, iterations=5, seed=3)
    second = fit_embeddings(spark, paths, rank=8, iterations=5, seed=3)
    assert first["user_factors"].equals(second["user_factors"])
    assert first["item_factors"].equals(second["item_factors"])
    timeless = [{k: v for k, v in r["stats"].items() if k != "timings_s"} for r in (first, second)]
    assert timeless[0] == timeless[1]

    events = pa.concat_tables(read_table(uri, EVENTS_FILE) for uri in window)
    users = first["user_factors"]
    factors = np.stack(users.column("factors").to_numpy(zero_copy_only=False))
    assert factors.shape == (users.num_rows, 8) and np.isfinite(factors).all()
    # Every user of the window has a row (a zero vector if ALS had no positive rating for it).
    assert users.num_rows == len(set(events.column("user_id").to_pylist())) == first["stats"]["users"]
    assert first["stats"]["users_with_factors"] > 0.9 * users.num_rows
    ids = users.column("user_id").to_numpy()
    assert (np.diff(ids) > 0).all()
    items = first["item_factors"]
    assert items.column("impressions").to_numpy().sum() == events.num_rows
    assert items.column("clicks").to_numpy().sum() == pc.sum(events.column("clicked")).as_py()
    assert first["stats"]["interactions"] == events.num_rows
    assert 0 < first["stats"]["observed_weighted_rmse"] < 1


@pytest.mark.slow
def test_workload_commits_factors_that_rank_the_held_out_days_clicks(recsys_world):
    manifest = read_manifest(recsys_world.embeddings_uri)
    summary = manifest["summary"]
    assert set(manifest["files"]) == {USER_FACTORS_FILE, ITEM_FACTORS_FILE}
    assert summary["rank"] == contract.ALS_RANK and summary["iterations"] == contract.ALS_ITERATIONS
    assert summary["days"] == 7 and summary["date"] == DATE
    assert summary["users"] > 2_500 and summary["items"] == 300 and summary["elapsed_s"] > 0
    # The plan for this small window is today's fixed settings, recorded with the factors.
    assert summary["als_plan"] == {"rank": contract.ALS_RANK, "blocks": 4, "checkpoint_interval": -1}
    assert summary["checkpointed"] is False

    users = read_table(recsys_world.embeddings_uri, USER_FACTORS_FILE).to_pandas().set_index("user_id")
    items = read_table(recsys_world.embeddings_uri, ITEM_FACTORS_FILE).to_pandas().set_index("item_id")
    held_out = read_table(recsys_world.eval_uri, EVENTS_FILE).to_pandas()
    known = held_out[held_out["user_id"].isin(users.index) & held_out["item_id"].isin(items.index)]
    u = np.stack(users.loc[known["user_id"], "factors"].to_numpy())
    v = np.stack(items.loc[known["item_id"], "factors"].to_numpy())
    # Day D was never seen by ALS, yet the factors' dot product already ranks its clicks well.
    assert roc_auc_score(known["clicked"], np.sum(u * v, axis=1)) > 0.75


@pytest.mark.slow
def test_zero_net_ratings_and_negative_only_entities_do_not_poison_the_fit(spark, tmp_path):
    # Item 0: users with (user % 3 == 0) click it once with weight exactly 1.5 (dwell e^2-1) and
    # ignore it once (-1.5): net 0, no information; everyone else ignores it twice. So item 0
    # has no positive rating at all, which Spark would solve unregularized (singular here).
    rows = []
    for user in range(40):
        for item in range(12):
            clicked = int((user + item) % 3 == 0)
            rows.append((f"e{user}-{item}", user, item, clicked, float(np.expm1(2.0)) if clicked else 0.0))
            if item == 0:
                rows.append((f"f{user}-{item}", user, item, 0, 0.0))
    n = len(rows)
    table = pa.table(
        {
            "event_id": [r[0] for r in rows],
            "user_id": pa.array([r[1] for r in rows], pa.int64()),
            "item_id": pa.array([r[2] for r in rows], pa.int64()),
            "event_at": pa.array([0] * n, pa.int64())
            .cast(pa.timestamp("us"))
            .cast(INTERACTIONS_SCHEMA.field("event_at").type),
            "device": ["ios"] * n,
            "position": pa.array([0] * n, pa.int32()),
            "clicked": pa.array([r[3] for r in rows], pa.int8()),
            "dwell_seconds": [r[4] for r in rows],
        },
        schema=INTERACTIONS_SCHEMA,
    )
    pq.write_table(table, tmp_path / EVENTS_FILE)
    result = fit_embeddings(spark, [normalize_uri(str(tmp_path / EVENTS_FILE))], rank=4, iterations=3)
    users, items = result["user_factors"].to_pandas(), result["item_factors"].to_pandas()
    assert np.isfinite(np.stack(users["factors"])).all() and np.isfinite(np.stack(items["factors"])).all()
    assert result["stats"]["interactions"] == n and result["stats"]["items_with_factors"] == 11
    # Item 0 keeps its window counts (a popularity signal) with a zero vector (cold start).
    item0 = items.set_index("item_id").loc[0]
    assert item0["impressions"] == 80 and item0["clicks"] == 14 and not np.any(item0["factors"])


def test_inputs_spark_cannot_read_fail_clearly(tmp_path):
    # s3:// without hadoop-aws fails before any storage is touched; the params say whether the cluster has it.
    with pytest.raises(ValueError, match=r"file:// paths only"):
        spark_events_path("s3://bucket/user_interactions/2026-03-01/v=abc", LOCAL)
    with pytest.raises(ArtifactNotCommitted):
        spark_events_path(normalize_uri(str(tmp_path / "not_committed")), LOCAL)


def test_the_plan_for_todays_sizes_is_todays_settings():
    # The default demo's window: 888,845 (user, item) pairs over 9,969 users and 1,000 items.
    assert als_plan(888_845, 9_969, 1_000) == AlsPlan(rank=12, blocks=4, checkpoint_interval=-1)
    assert als_plan(0, 0, 0) == AlsPlan(rank=12, blocks=4, checkpoint_interval=-1)


def test_the_plan_grows_with_the_input_in_powers_of_two_up_to_a_cap():
    seed = als_plan(18_000_000, 650_000, 50_000)  # ~20M impressions over 1M users x 50k items
    assert seed.blocks == 16 and seed.checkpoint_interval == contract.ALS_CHECKPOINT_INTERVAL
    assert seed.rank == contract.ALS_RANK  # rank is the params', never traded for time
    assert als_plan(18_000_000, 650_000, 50_000, rank=8).rank == 8
    # Many users with few ratings need blocks too (each block solves at most ALS_ENTITIES_PER_BLOCK).
    assert als_plan(1_000_000, 3_000_000, 1_000).blocks == 16
    assert als_plan(10**12, 10**9, 10**6).blocks == contract.ALS_MAX_BLOCKS
    sizes = [10**5 * 2**i for i in range(14)]
    blocks = [als_plan(n, n // 20, 50_000).blocks for n in sizes]
    assert blocks == sorted(blocks) and all(b & (b - 1) == 0 for b in blocks)  # monotone, powers of two
    assert als_plan(contract.ALS_CHECKPOINT_MIN_RATINGS - 1, 1, 1).checkpoint_interval == -1
    with pytest.raises(ValueError, match="sizes must be >= 0"):
        als_plan(-1, 0, 0)


def test_checkpoints_go_to_the_workloads_scratch_locally_and_to_shared_storage_on_a_cluster():
    assert checkpoint_dir_for(SparkSettings(master="local[2]"), "/tmp/scratch") == "/tmp/scratch"
    assert checkpoint_dir_for(SparkSettings(master="spark://m:7077"), "/tmp/scratch") is None
    shared = SparkSettings(master="k8s://api", conf={"spark.checkpoint.dir": "s3a://b/ckpt"})
    assert checkpoint_dir_for(shared, "/tmp/scratch") == "s3a://b/ckpt"


def test_factors_join_the_window_ids_by_vector_not_by_python_dict():
    factors = pa.table(
        {"id": pa.array([7, 3], pa.int32()), "features": pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float32()))}
    )
    counts = pa.table({"item_id": [9, 7, 3], "impressions": [5, 6, 7], "clicks": [0, 1, 2]})
    table = factors_table(factors, counts, "item_id", rank=2)
    assert table.column("item_id").to_pylist() == [3, 7, 9]  # every id of the window, sorted
    assert table.column("factors").to_pylist() == [[3.0, 4.0], [1.0, 2.0], [0.0, 0.0]]  # 9: no ALS vector
    assert table.column("impressions").to_pylist() == [7, 6, 5] and table.column("clicks").to_pylist() == [2, 1, 0]
    assert table.schema.field("factors").type == pa.list_(pa.float32())
    stray = pa.table({"id": pa.array([4], pa.int32()), "features": pa.array([[1.0, 2.0]], pa.list_(pa.float32()))})
    with pytest.raises(RuntimeError, match="ALS returned item_ids that are not in the window"):
        factors_table(stray, counts, "item_id", rank=2)


@pytest.mark.slow
def test_checkpointing_leaves_the_factors_unchanged(spark, recsys_world, tmp_path):
    paths = [spark_events_path(uri, LOCAL) for uri in recsys_world.train_uris[-2:]]
    plain = fit_embeddings(spark, paths, rank=6, iterations=4, plan=AlsPlan(rank=6, blocks=4, checkpoint_interval=-1))
    checkpointed = fit_embeddings(
        spark,
        paths,
        rank=6,
        iterations=4,
        plan=AlsPlan(rank=6, blocks=4, checkpoint_interval=1),
        checkpoint_dir=str(tmp_path / "checkpoints"),
    )
    assert checkpointed["stats"]["checkpointed"] and not plain["stats"]["checkpointed"]
    assert checkpointed["stats"]["als_plan"] == {"rank": 6, "blocks": 4, "checkpoint_interval": 1}
    assert any((tmp_path / "checkpoints").rglob("*"))  # Spark wrote there
    assert checkpointed["user_factors"].equals(plain["user_factors"])
    assert checkpointed["item_factors"].equals(plain["item_factors"])
