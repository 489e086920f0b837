"""The training window's loading: a day at a time into compact rows, the same rows, labels, split and order."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from mltrain_assets.artifacts import ArtifactWriter, normalize_uri
from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.pipelines.recsys.simulate import simulate_day
from mltrain_assets.pipelines.recsys.workloads.features import FactorTable, encode, encode_rows
from mltrain_assets.pipelines.recsys.workloads.fold_in import stack_tables
from mltrain_assets.pipelines.recsys.workloads.train.data import (
    EVENT_COLUMNS,
    NODE_CPUS_ENV,
    epoch_order,
    load_window,
    node_cpus,
    read_events,
    threads_per_worker,
    training_labels,
    validation_split,
    window_head,
    window_rows,
)
from mltrain_assets.workloads.common.runtime import DataRejected
from mltrain_assets.workloads.ingest.params import EVENTS_FILE

DATES = ("2026-03-01", "2026-03-02", "2026-03-03")


def commit_days(root) -> list[str]:
    uris = []
    for date in DATES:
        day, _ = simulate_day(date, events_per_day=2_000 + 500 * len(uris), n_users=150, n_items=40)
        uri = normalize_uri(str(root / date / "v=test"))
        writer = ArtifactWriter(uri, producer="tests", code_version="test")
        writer.write_table(EVENTS_FILE, day)
        writer.commit()
        uris.append(uri)
    return uris


def factors(n: int, id_column: str) -> FactorTable:
    vectors = np.random.default_rng(n).standard_normal((n, 3)).astype(np.float32)
    table = pa.table(
        {
            id_column: pa.array(np.arange(0, 2 * n, 2), pa.int64()),  # odd ids unknown
            "factors": pa.array(list(vectors), pa.list_(pa.float32())),
            "impressions": np.full(n, 50),
            "clicks": np.full(n, 10),
        }
    )
    return FactorTable.from_arrow(table, id_column, 0.2)


def test_the_window_loads_a_day_at_a_time_into_the_rows_a_whole_frame_gives(tmp_path):
    uris = commit_days(tmp_path)
    users, items = factors(75, "user_id"), factors(20, "item_id")
    rows, clicked = load_window(uris, users, items)

    whole = pa.concat_tables(simulate_day(d, 2_000 + 500 * i, 150, 40)[0] for i, d in enumerate(DATES))
    expected = encode_rows(whole.select(EVENT_COLUMNS).to_pandas(), users, items)
    assert len(rows) == whole.num_rows == sum(window_rows(uris))
    for got, want in zip(rows.tensors(), expected.tensors(), strict=True):
        assert got.dtype == want.dtype and torch.equal(got, want)
    assert clicked.dtype == torch.int8 and clicked.tolist() == whole.column("clicked").to_pylist()
    assert torch.equal(encode(rows, users, items), encode(expected, users, items))

    head = window_head(uris, 3_000)  # spans the first two days
    assert head.equals(whole.select(EVENT_COLUMNS).slice(0, 3_000).to_pandas())
    with pytest.raises(DataRejected, match="no training days given"):
        load_window([], users, items)


def test_each_day_finds_its_users_in_its_own_block_of_the_stacked_table(tmp_path):
    uris = commit_days(tmp_path)
    items = factors(20, "item_id")
    per_day = [factors(75 - 10 * k, "user_id") for k in range(len(uris))]  # a different table per day
    users, offsets = stack_tables(per_day)
    rows, _ = load_window(uris, users, items, users_by_day=list(zip(per_day, offsets, strict=True)))
    start = 0
    for uri, day_users, offset in zip(uris, per_day, offsets, strict=True):
        day = read_events(uri)
        alone = encode_rows(day, day_users, items)
        got = rows.slice(start, start + day.num_rows)
        # The day's own features, read through the stack: unknown users stay on row 0.
        assert torch.equal(encode(got, users, items), encode(alone, day_users, items))
        assert torch.equal(got.user_row == 0, alone.user_row == 0)
        assert (got.user_row[alone.user_row > 0] > offset).all()
        start += day.num_rows


def test_labels_split_and_epoch_order_are_compact_and_what_they_were():
    clicked = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1, 1], dtype=torch.int8)
    labels = training_labels(clicked, shuffle=False, seed=0)
    assert labels.dtype == torch.int8 and torch.equal(labels, clicked)
    # Shuffled: the permutation the float32 labels were shuffled by, the same click rate.
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(7_919))
    assert torch.equal(training_labels(clicked, shuffle=True, seed=0), clicked[perm])

    train, val = validation_split(1_000, seed=3)
    order = torch.randperm(1_000, generator=torch.Generator().manual_seed(3 + 104_729))
    n_val = round(1_000 * contract.VALIDATION_FRACTION)
    assert train.dtype == val.dtype == torch.int32
    assert torch.equal(train.long(), order[n_val:].sort().values) and torch.equal(
        val.long(), order[:n_val].sort().values
    )


@pytest.mark.parametrize(("n", "replicas"), [(10, 2), (11, 2), (7, 3), (1, 3), (0, 2), (1_001, 4)])
def test_epoch_order_is_the_distributed_samplers_without_its_python_list(n, replicas):
    for rank in range(replicas):
        sampler = DistributedSampler(range(n), num_replicas=replicas, rank=rank, shuffle=True, seed=5)
        for epoch in (1, 2, 4):
            sampler.set_epoch(epoch)
            order = epoch_order(n, replicas, rank, seed=5, epoch=epoch)
            assert order.dtype == torch.int64 and order.tolist() == list(sampler)


def test_workers_size_their_threads_by_the_pods_cpu_request_else_by_the_cores_they_may_use(monkeypatch):
    monkeypatch.setenv(NODE_CPUS_ENV, "8")
    assert (node_cpus(), threads_per_worker(2), threads_per_worker(8), threads_per_worker(16)) == (8, 4, 1, 1)
    monkeypatch.delenv(NODE_CPUS_ENV)
    assert node_cpus() == len(os.sched_getaffinity(0))
    for bad in ("0", "1.5", "2000m"):
        monkeypatch.setenv(NODE_CPUS_ENV, bad)
        with pytest.raises(ValueError, match=rf"\$MLTRAIN_NODE_CPUS={bad!r}: expected a whole number of cores"):
            node_cpus()
