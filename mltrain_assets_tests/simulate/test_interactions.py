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
from mltrain_assets.simulate.interactions import (
    DEVICES,
    LIST_LENGTH,
    simulate_day,
    true_logit,
    world,
    write_interactions_day,
)
from mltrain_assets.workloads.recsys.contract import INTERACTIONS_SCHEMA

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


@pytest.mark.services
def test_writes_a_day_to_s3(s3_endpoint):
    landing = "s3://mltrain/landing-sim"
    summary = write_interactions_day(landing, "2026-03-01", events_per_day=2_000, n_users=200, n_items=50)
    status = day_status(landing, "interactions", "2026-03-01")
    assert status["success"] and status["hours"] == list(range(24))
    assert summary["events"] == 2_002
