"""Compact encoding: the same features as the int64 rows it replaced, from pandas and from Arrow alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from mltrain_assets.pipelines.recsys.simulate import simulate_day
from mltrain_assets.pipelines.recsys.workloads.features import (
    DEVICES,
    EncodedRows,
    FactorTable,
    encode,
    encode_rows,
    feature_dim,
    feature_layout,
)
from mltrain_assets.pipelines.recsys.workloads.train.data import EVENT_COLUMNS

RANK = 4


def factor_table(ids: list[int], id_column: str, seed: int) -> FactorTable:
    vectors = np.random.default_rng(seed).standard_normal((len(ids), RANK)).astype(np.float32)
    impressions = np.arange(len(ids)) + 10
    table = pa.table(
        {
            id_column: pa.array(ids, pa.int64()),
            "factors": pa.array(list(vectors), pa.list_(pa.float32())),
            "impressions": impressions,
            "clicks": impressions // 3,
        }
    )
    return FactorTable.from_arrow(table, id_column, global_ctr=0.3)


def int64_rows(frame: pd.DataFrame, users: FactorTable, items: FactorTable, max_position: int) -> EncodedRows:
    """The encoding as it was before the compact one: int64 indices, device by a Python dict."""
    device = frame["device"].map({name: i for i, name in enumerate(DEVICES)}).fillna(-1).to_numpy(dtype=np.int64)
    at = pd.to_datetime(frame["event_at"], utc=True)
    hour = (at.dt.hour + at.dt.minute / 60.0).to_numpy(dtype=np.float32)
    return EncodedRows(
        torch.from_numpy(users.rows(frame["user_id"].to_numpy()).astype(np.int64)),
        torch.from_numpy(items.rows(frame["item_id"].to_numpy()).astype(np.int64)),
        torch.from_numpy(device),
        torch.from_numpy(np.clip(frame["position"].to_numpy(dtype=np.int64), 0, max_position)),
        torch.from_numpy(hour),
    )


def test_compact_rows_from_pandas_and_arrow_give_exactly_the_features_of_int64_rows():
    day, _ = simulate_day("2026-03-02", events_per_day=3_000, n_users=120, n_items=30)
    day = day.select(EVENT_COLUMNS)
    frame = day.to_pandas()
    # Unknown users and items (cold start), an unknown device, positions past the last bucket.
    frame.loc[:9, "user_id"] = 10**12
    frame.loc[5:14, "item_id"] = 10**12
    frame.loc[20:24, "device"] = "tv"
    frame.loc[30:34, "position"] = 40
    table = pa.Table.from_pandas(frame, preserve_index=False)
    users = factor_table(list(range(0, 120, 2)), "user_id", 1)  # odd users are unknown
    items = factor_table(list(range(25)), "item_id", 2)
    max_position = 5

    reference = encode(int64_rows(frame, users, items, max_position), users, items, max_position)
    for source in (frame, table):
        rows = encode_rows(source, users, items, max_position)
        dtypes = [t.dtype for t in rows.tensors()]
        assert dtypes == [torch.int32, torch.int32, torch.int8, torch.int8, torch.float32]
        assert sum(t.element_size() for t in rows.tensors()) == 14  # bytes a row, was 36
        assert torch.equal(encode(rows, users, items, max_position), reference)
    assert (encode_rows(table, users, items, max_position).device[20:25] == -1).all()


def test_an_hour_column_is_used_as_is_and_a_non_utc_event_time_is_read_in_utc():
    users, items = factor_table([1], "user_id", 1), factor_table([1], "item_id", 2)
    at = pd.Series(pd.to_datetime(["2026-03-02 23:30", "2026-03-02 00:15"]).tz_localize("UTC"))
    frame = pd.DataFrame({"user_id": [1, 1], "item_id": [1, 1], "device": ["ios", "web"], "position": [0, 1]})
    in_utc = encode_rows(frame.assign(event_at=at), users, items).hour
    berlin = pa.Table.from_pandas(frame.assign(event_at=at.dt.tz_convert("Europe/Berlin")), preserve_index=False)
    assert torch.equal(encode_rows(berlin, users, items).hour, in_utc)
    assert in_utc.tolist() == [23.5, 0.25]
    assert encode_rows(frame.assign(hour=[8.5, 9.0]), users, items).hour.tolist() == [8.5, 9.0]


def test_the_feature_layout_names_what_encode_writes():
    users, items = factor_table([1, 2], "user_id", 3), factor_table([1], "item_id", 4)
    rows = EncodedRows(
        torch.tensor([1, 2], dtype=torch.int32),
        torch.tensor([1, 0], dtype=torch.int32),
        torch.tensor([2, -1], dtype=torch.int8),
        torch.tensor([3, 0], dtype=torch.int8),
        torch.tensor([6.0, 18.0]),
    )
    x = encode(rows, users, items, max_position=4)
    layout = feature_layout(RANK, 4)
    u, v = users.vectors[[1, 2]], items.vectors[[1, 0]]
    assert x.shape[1] == feature_dim(RANK, 4) == layout["hour"].stop
    assert torch.equal(x[:, layout["user_item_product"]], u * v)
    assert torch.equal(x[:, layout["user_item_dot"]].squeeze(1), (u * v).sum(1))
    assert torch.equal(x[:, layout["user_vector"]], u) and torch.equal(x[:, layout["item_vector"]], v)
    assert torch.equal(x[:, layout["item_stats"]], items.stats[[1, 0]])
    assert x[:, layout["device"]].tolist() == [[0, 0, 1], [0, 0, 0]]
    assert x[:, layout["position"]].argmax(1).tolist() == [3, 0]
