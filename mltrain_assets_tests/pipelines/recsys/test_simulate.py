"""The interactions simulator: landing layout, schema, determinism, drift and learnable signal."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from mltrain_assets.artifacts import filesystem, normalize_uri
from mltrain_assets.landing import day_status, success_uri
from mltrain_assets.pipelines.recsys.contract import INTERACTIONS_SCHEMA
from mltrain_assets.pipelines.recsys.simulate import (
    DEVICES,
    LIST_LENGTH,
    click_probabilities,
    simulate_day,
    true_logit,
    world,
    write_interactions_day,
)
from mltrain_assets.pipelines.recsys.workloads.evaluate import oracle_auc

SMALL = {"events_per_day": 20_000, "n_users": 2_000, "n_items": 200}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_day_lands_24_hourly_parts_with_the_exact_schema_then_success(tmp_path):
    landing = normalize_uri(str(tmp_path / "landing"))
    summary = write_interactions_day(landing, "2026-03-01", **SMALL)

    status = day_status(landing, "interactions", "2026-03-01")
    assert status["success"] and status["hours"] == list(range(24))
    marker = json.loads(Path(filesystem(success_uri(landing, "interactions", "2026-03-01"))[1]).read_bytes())
    assert marker["events"] == summary["events"] == 20_000 + summary["duplicates"]

    parts = []
    for hour in range(24):
        part = pq.read_table(tmp_path / f"landing/interactions/date=2026-03-01/hour={hour:02d}/part-00000.parquet")
        assert part.schema.equals(INTERACTIONS_SCHEMA), part.schema
        assert set(pc.hour(part.column("event_at")).to_pylist()) <= {hour}
        parts.append(part.to_pandas())
    events = pd.concat(parts, ignore_index=True)
    assert len(events) == summary["events"]
    assert (events["event_at"].dt.date == dt.date(2026, 3, 1)).all()

    # ~0.1% redelivered: the same event_id with the same content.
    duplicated = events[events.duplicated("event_id", keep=False)]
    assert summary["duplicates"] == 20 and len(duplicated) == 40
    assert len(duplicated.drop_duplicates()) == 20

    assert set(events["device"]) <= set(DEVICES)
    assert events["position"].between(0, LIST_LENGTH - 1).all()
    assert set(events["clicked"]) == {0, 1}
    assert ((events["dwell_seconds"] > 0) == (events["clicked"] == 1)).all()
    assert 0.15 < events["clicked"].mean() < 0.5
    # Popularity skew: the top 10% of items get far more than 10% of the impressions.
    counts = events["item_id"].value_counts()
    assert counts.head(len(counts) // 10).sum() > 0.3 * len(events)


def test_reruns_are_byte_identical_and_days_do_not_depend_on_generation_order(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for date in ("2026-03-01", "2026-03-02"):
        write_interactions_day(normalize_uri(str(first)), date, **SMALL)
    for date in ("2026-03-02", "2026-03-01"):
        write_interactions_day(normalize_uri(str(second)), date, **SMALL)
    assert _files(first) == _files(second)

    before = _files(first)
    write_interactions_day(normalize_uri(str(first)), "2026-03-01", **SMALL)
    assert _files(first) == before

    other_seed, _ = simulate_day("2026-03-01", seed=1, **SMALL)
    same_seed, _ = simulate_day("2026-03-01", seed=0, **SMALL)
    assert not other_seed.equals(same_seed)


def test_world_is_fixed_by_the_seed_and_tastes_drift_slowly_with_the_date():
    w = world(2_000, 200, 0)
    assert np.array_equal(w.item_vec, world(2_000, 200, 0).item_vec)
    assert not np.array_equal(w.item_vec, world(2_000, 200, 1).item_vec)

    def similarity(a: str, b: str) -> float:
        ta, tb = w.tastes(a), w.tastes(b)
        return float(np.mean(np.sum(ta * tb, 1) / (np.linalg.norm(ta, axis=1) * np.linalg.norm(tb, axis=1))))

    assert similarity("2026-03-01", "2026-03-02") > 0.99
    assert similarity("2026-03-01", "2026-03-08") > 0.95
    assert similarity("2026-03-01", "2026-04-15") < similarity("2026-03-01", "2026-03-08") - 0.03


def test_clicks_carry_signal_an_oracle_ranks_well_and_shuffled_labels_do_not():
    table, _ = simulate_day("2026-03-08", **SMALL)
    df = table.to_pandas()
    w = world(SMALL["n_users"], SMALL["n_items"], 0)
    device = df["device"].map({d: i for i, d in enumerate(DEVICES)}).to_numpy()
    logit = true_logit(
        w, "2026-03-08", df["user_id"].to_numpy(), df["item_id"].to_numpy(), device, df["position"].to_numpy(),
        df["event_at"].dt.hour.to_numpy(),
    )  # fmt: skip
    assert roc_auc_score(df["clicked"], logit) > 0.88
    shuffled = np.random.default_rng(0).permutation(df["clicked"].to_numpy())
    assert abs(roc_auc_score(shuffled, logit) - 0.5) < 0.02
    # Position bias: the top slot is clicked more than the last one.
    by_position = df.groupby("position")["clicked"].mean()
    assert by_position[0] > by_position[LIST_LENGTH - 1] + 0.05


def test_the_oracle_recomputes_the_drawn_click_probabilities_of_every_unique_event_and_scores_the_day():
    table, stats = simulate_day("2026-03-08", **SMALL)
    oracle = click_probabilities("2026-03-08", **SMALL)

    assert oracle.column_names == ["event_id", "p_click", "true_logit"]
    assert oracle.num_rows == stats["unique_events"] == len(pc.unique(table.column("event_id")))
    assert oracle.equals(click_probabilities("2026-03-08", **SMALL)), "same seed, same probabilities"
    assert not oracle.equals(click_probabilities("2026-03-09", **SMALL))
    p = oracle.column("p_click").to_numpy()
    assert ((p > 0) & (p < 1)).all()
    # The clicks were drawn from p_click: its mean is the click rate, up to sampling noise.
    assert abs(p.mean() - stats["click_rate"]) < 0.01
    # The landing table keeps its schema: nothing of the oracle travels with the data the pipeline reads.
    assert table.schema.names == INTERACTIONS_SCHEMA.names

    deduplicated = table.group_by("event_id").aggregate([("clicked", "max")]).rename_columns(["event_id", "clicked"])
    figures = oracle_auc(deduplicated, oracle)
    assert figures["n"] == stats["unique_events"]
    assert figures["oracle_auc"] > 0.88 and figures["oracle_auc_noise_free"] > 0.88
    with pytest.raises(ValueError, match="2 of 20000 events unknown to the oracle"):
        oracle_auc(deduplicated, oracle.slice(2))


@pytest.mark.services
def test_writes_a_day_to_s3(s3_endpoint):
    landing = "s3://mltrain/landing-sim"
    summary = write_interactions_day(landing, "2026-03-01", events_per_day=2_000, n_users=200, n_items=50)
    status = day_status(landing, "interactions", "2026-03-01")
    assert status["success"] and status["hours"] == list(range(24))
    assert summary["events"] == 2_002


def test_world_and_day_sizes_are_honoured_from_the_cli(tmp_path):
    from mltrain_assets.cli import main

    landing = normalize_uri(str(tmp_path / "landing"))
    argv = ["simulate", "--dataset", "interactions", "--start", "2026-03-01", "--users", "300", "--items", "40",
            "--events-per-day", "3000", "--landing-uri", landing]  # fmt: skip
    assert main(argv) == 0
    marker = json.loads(Path(filesystem(success_uri(landing, "interactions", "2026-03-01"))[1]).read_bytes())
    assert (marker["n_users"], marker["n_items"], marker["events"]) == (300, 40, 3000 + 3)
    events = pq.read_table(tmp_path / "landing/interactions/date=2026-03-01").to_pandas()
    assert len(events) == 3003 and events["event_id"].nunique() == 3000
    assert events["user_id"].between(0, 299).all() and events["item_id"].between(0, 39).all()
    assert events["item_id"].nunique() == 40  # 3,000 impressions reach every one of 40 items


def test_users_and_items_size_the_interactions_world_only(tmp_path):
    from mltrain_assets.simulate import simulate

    with pytest.raises(
        ValueError, match=r"option\(s\) \[.users.\] do not apply to dataset .rides.; its options: \[.cities.\]"
    ):
        simulate("rides", normalize_uri(str(tmp_path)), "2026-03-01", "2026-03-01", users=10)
    with pytest.raises(ValueError, match="items must be a positive number, got 0"):
        simulate("interactions", normalize_uri(str(tmp_path)), "2026-03-01", "2026-03-01", items=0)


def test_chunked_features_and_arrow_event_ids_leave_the_day_unchanged(monkeypatch):
    import mltrain_assets.pipelines.recsys.simulate as interactions

    whole, _ = simulate_day("2026-03-03", **SMALL)
    monkeypatch.setattr(interactions, "AFFINITY_CHUNK", 1_234)  # many chunks, one ragged
    chunked, _ = simulate_day("2026-03-03", **SMALL)
    assert chunked.equals(whole)
    # The ids are what a Python f-string per event gave, whatever the number of digits.
    numbers = np.array([0, 7, 12_345_678, 123_456_789])
    expected = [f"ix-20260303-s0-{n:08d}" for n in numbers]
    assert interactions._event_ids("ix-20260303-s0-", numbers).to_pylist() == expected


def test_a_large_world_honours_its_sizes():
    # 200k users x 20k items: the world is O(users + items), a day O(impressions); no users x items array.
    table, stats = simulate_day("2026-03-01", events_per_day=50_000, n_users=200_000, n_items=20_000)
    assert table.num_rows == 50_050 and stats["unique_events"] == 50_000
    assert pc.max(table.column("user_id")).as_py() < 200_000 and pc.max(table.column("item_id")).as_py() < 20_000
    w = world(200_000, 20_000, 0)
    assert w.n_users == 200_000 and w.n_items == 20_000
    assert w.user_base.nbytes + w.item_vec.nbytes < 20 * 2**20
