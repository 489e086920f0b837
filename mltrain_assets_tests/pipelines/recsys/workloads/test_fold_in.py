"""Fresh user vectors: Spark's own ALS user step reproduced, no day's clicks in its own rows, deterministic."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mltrain_assets.artifacts import ArtifactWriter, normalize_uri, read_manifest, read_table
from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.pipelines.recsys.contract import ITEM_FACTORS_FILE, USER_FACTORS_FILE
from mltrain_assets.pipelines.recsys.workloads.features import FactorTable, global_click_rate
from mltrain_assets.pipelines.recsys.workloads.fold_in import AlsSettings, FoldIn, micro_ratings, stack_tables
from mltrain_assets.pipelines.recsys.workloads.train.data import load_fold_in
from mltrain_assets.workloads.common.runtime import DataRejected

RANK = 4


def _items(n: int = 20, seed: int = 0) -> FactorTable:
    rng = np.random.default_rng(seed)
    table = pa.table(
        {
            "item_id": pa.array(np.arange(1, n + 1, dtype=np.int64)),
            "factors": pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=n * RANK), pa.float32()), RANK),
            "impressions": pa.array(np.full(n, 100, np.int64)),
            "clicks": pa.array(np.full(n, 10, np.int64)),
        }
    )
    return FactorTable.from_arrow(table, "item_id", 0.1)


def _day(rows: list[tuple[int, int, int, float]]) -> pa.Table:
    user, item, clicked, dwell = zip(*rows, strict=True)
    return pa.table(
        {
            "user_id": pa.array(user, pa.int64()),
            "item_id": pa.array(item, pa.int64()),
            "clicked": pa.array(clicked, pa.int8()),
            "dwell_seconds": pa.array(dwell, pa.float64()),
        }
    )


def _vectors(table: pa.Table) -> dict[int, np.ndarray]:
    factors = table.column("factors").combine_chunks().flatten().to_numpy().reshape(-1, RANK)
    return dict(zip(table.column("user_id").to_pylist(), factors, strict=True))


DAYS = [
    _day([(1, 1, 1, 30.0), (1, 2, 0, 0.0), (2, 3, 0, 0.0), (2, 4, 0, 0.0), (3, 5, 1, 5.0)]),
    _day([(1, 6, 1, 12.0), (2, 7, 1, 60.0), (3, 5, 0, 0.0), (4, 8, 1, 3.0)]),
    _day([(1, 9, 0, 0.0), (2, 3, 1, 2.0), (4, 999, 1, 9.0), (5, 1, 1, 1.0)]),
]


def test_a_days_users_are_solved_from_the_days_before_it_never_from_its_own_clicks():
    fold = FoldIn(DAYS, _items(), AlsSettings())
    before_day_1 = fold.users_before(1, only_users_of_day=True)
    # Day 1's users seen before it (user 4 is new that day: it is looked up as unknown).
    assert before_day_1.column("user_id").to_pylist() == [1, 2, 3]
    flipped = DAYS[1].set_column(2, "clicked", pa.array([0, 0, 1, 0], pa.int8()))
    refold = FoldIn([DAYS[0], flipped, DAYS[2]], _items(), AlsSettings())
    assert refold.users_before(1, only_users_of_day=True).equals(before_day_1)
    # From day 2 on, day 1's clicks count.
    assert not np.allclose(_vectors(refold.users_before(2))[1], _vectors(fold.users_before(2))[1])


def test_counts_cover_the_days_before_and_a_user_without_a_positive_rating_keeps_a_zero_vector():
    fold = FoldIn(DAYS, _items(), AlsSettings())
    table = fold.users_before(1)
    assert table.column("impressions").to_pylist() == [2, 2, 1]
    assert table.column("clicks").to_pylist() == [1, 0, 1]
    vectors = _vectors(table)
    assert not vectors[2].any()  # two impressions, no click: ALS would not solve it either
    assert vectors[1].any() and vectors[3].any()
    # An item ALS never saw (999) adds to the counts but not to the equations.
    through_2 = fold.users_before(3)
    counts = dict(
        zip(through_2.column("user_id").to_pylist(), through_2.column("impressions").to_pylist(), strict=True)
    )
    assert counts[4] == 2


def test_the_same_days_give_the_same_bytes():
    first = FoldIn(DAYS, _items(), AlsSettings()).users_before(3)
    second = FoldIn(DAYS, _items(), AlsSettings()).users_before(3)
    assert first.equals(second)
    assert first.column("user_id").to_pylist() == [1, 2, 3, 4, 5]


def test_ratings_are_the_embeddings_ratings_in_micro_units():
    ratings = micro_ratings(np.array([1, 1, 0]), np.array([0.0, np.e - 1, 5.0]), AlsSettings(dwell_log_scale=4.0))
    assert ratings.tolist() == [1_000_000, 1_250_000, -round(contract.ALS_NEGATIVE_WEIGHT * 1_000_000)]


def test_the_settings_are_the_embeddings_versions_own_or_the_defaults_before_they_were_recorded():
    assert AlsSettings.from_summary({}) == AlsSettings()
    recorded = AlsSettings.from_summary({"als_settings": {"reg": 0.5, "alpha": 3, "negative_weight": 2.0}})
    assert (recorded.reg, recorded.alpha, recorded.negative_weight) == (0.5, 3.0, 2.0)
    assert recorded.dwell_log_scale == contract.ALS_DWELL_LOG_SCALE


def test_stacked_tables_keep_each_blocks_rows_after_its_offset():
    fold = FoldIn(DAYS, _items(), AlsSettings())
    blocks = [FactorTable.from_arrow(fold.users_before(k, only_users_of_day=True), "user_id", 0.1) for k in (1, 2)]
    stacked, offsets = stack_tables(blocks)
    assert offsets == [0, len(blocks[0].ids)]
    assert len(stacked.vectors) == 1 + sum(len(b.ids) for b in blocks)
    row = blocks[1].rows(np.array([2]))[0]
    assert np.array_equal(stacked.vectors[offsets[1] + row], blocks[1].vectors[row])
    assert not stacked.vectors[0].any()  # row 0: the unknown user


def test_an_embeddings_version_that_names_no_days_is_refused_naming_it(tmp_path):
    uri = normalize_uri(str(tmp_path / "interaction_embeddings" / "v=old"))
    writer = ArtifactWriter(uri, producer="tests", code_version="test")  # no inputs recorded
    writer.write_json("note.json", {})
    writer.commit()
    with pytest.raises(DataRejected, match=r"manifest of .*v=old names no inputs.user_interactions"):
        load_fold_in(uri, [], _items())


@pytest.mark.slow
def test_solving_the_embeddings_window_again_gives_sparks_own_user_factors(recsys_world):
    """The equations are Spark ALS's: over the days ALS saw, with its item vectors, its user vectors come back."""
    manifest = read_manifest(recsys_world.embeddings_uri)
    assert set(manifest["summary"]["als_settings"]) == {"reg", "alpha", "negative_weight", "dwell_log_scale"}
    item_factors = read_table(recsys_world.embeddings_uri, ITEM_FACTORS_FILE)
    items = FactorTable.from_arrow(item_factors, "item_id", global_click_rate(item_factors))
    fold, embedding_days = load_fold_in(recsys_world.embeddings_uri, [], items)
    assert embedding_days == len(manifest["inputs"]["user_interactions"]) == contract.EMBEDDING_WINDOW_DAYS
    solved = fold.users_before(embedding_days)
    spark = read_table(recsys_world.embeddings_uri, USER_FACTORS_FILE).sort_by("user_id")
    assert solved.column("user_id").equals(spark.column("user_id"))
    assert solved.column("impressions").equals(spark.column("impressions"))
    ours = solved.column("factors").combine_chunks().flatten().to_numpy().reshape(solved.num_rows, -1)
    theirs = np.stack(spark.column("factors").to_numpy(zero_copy_only=False))
    assert np.array_equal(ours.any(axis=1), theirs.any(axis=1))  # the same users solved, the same left at zero
    nonzero = theirs.any(axis=1)
    cosine = (ours * theirs).sum(1)[nonzero] / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))[nonzero]
    assert cosine.min() > 0.999
    assert np.allclose(ours, theirs, rtol=1e-3, atol=1e-4)
