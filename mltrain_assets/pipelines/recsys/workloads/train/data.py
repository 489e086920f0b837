"""The training window as the worker and the launcher both read it: events, frozen factors, labels, split.

Memory: a window of committed days is read with Arrow one day at a time, each day encoded
into a preallocated ``EncodedRows`` (int32 user/item rows, int8 device and position,
float32 hour) and int8 labels: 15 bytes a row, with no pandas frame and no Python string
per impression. Twenty million rows cost ~300 MB per worker.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from mltrain_assets.artifacts import read_table, require_manifest
from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.pipelines.recsys.workloads.features import (
    EncodedRows,
    FactorTable,
    encode_rows,
    global_click_rate,
)
from mltrain_assets.pipelines.recsys.workloads.fold_in import FOLD_IN_COLUMNS, AlsSettings, FoldIn
from mltrain_assets.workloads.common.runtime import DataRejected
from mltrain_assets.workloads.ingest.params import EVENTS_FILE

EVENT_COLUMNS = ["user_id", "item_id", "device", "position", "event_at", "clicked"]


def read_events(uri: str, columns: Sequence[str] = EVENT_COLUMNS) -> pa.Table:
    """One committed ``user_interactions`` version's events as Arrow."""
    return read_table(uri, EVENTS_FILE, columns)


def window_rows(uris: Sequence[str]) -> list[int]:
    """Rows of each committed day, from its manifest (nothing is read)."""
    counts = []
    for uri in uris:
        entry = require_manifest(uri)["files"].get(EVENTS_FILE)
        if entry is None or "rows" not in entry:
            raise FileNotFoundError(f"{EVENTS_FILE} with a row count is not listed in the manifest of {uri}")
        counts.append(int(entry["rows"]))
    return counts


def load_window(
    uris: Sequence[str],
    users: FactorTable,
    items: FactorTable,
    max_position: int = contract.MAX_POSITION,
    users_by_day: Sequence[tuple[FactorTable, int]] = (),
) -> tuple[EncodedRows, torch.Tensor]:
    """The days at ``uris`` in order as ``(EncodedRows, int8 clicked)``, encoded one day at a time into place.

    ``users_by_day``: per day, the table its users are looked up in and that table's offset in ``users``
    (``fold_in.stack_tables``): each day's rows see their users' vectors as of that day.
    """
    if not uris:
        raise DataRejected("train_recommender: no training days given")
    counts = window_rows(uris)
    rows = EncodedRows.empty(sum(counts))
    clicked = torch.empty(sum(counts), dtype=torch.int8)
    start = 0
    for index, (uri, expected) in enumerate(zip(uris, counts, strict=True)):
        day = read_events(uri)
        if day.num_rows != expected:
            raise DataRejected(f"train_recommender: {uri} holds {day.num_rows} rows, its manifest says {expected}")
        day_users, offset = users_by_day[index] if users_by_day else (users, 0)
        part = encode_rows(day, day_users, items, max_position)
        if offset:
            part.user_row = torch.where(part.user_row > 0, part.user_row + offset, part.user_row)
        rows.fill(start, part)
        clicked[start : start + expected] = torch.from_numpy(day.column("clicked").to_numpy().astype(np.int8))
        start += expected
    return rows, clicked


def window_head(uris: Sequence[str], n: int) -> pd.DataFrame:
    """The first ``n`` rows of the window (the days in order) as pandas: what MLflow's dataset digest reads."""
    parts, missing = [], n
    for uri in uris:
        if missing <= 0:
            break
        part = read_events(uri).slice(0, missing)
        parts.append(part)
        missing -= part.num_rows
    if not parts:
        raise DataRejected("train_recommender: no days given")
    return pa.concat_tables(parts).to_pandas()


def load_fold_in(embeddings_uri: str, interactions_uris: Sequence[str], items: FactorTable) -> tuple[FoldIn, int]:
    """Fresh user vectors' inputs: the embeddings version's own days, then ``interactions_uris``; and how many were its.

    The embeddings version's manifest names the days ALS saw and its summary the settings it used, so the
    users are solved on exactly the ratings and settings the item vectors were fitted with.
    """
    manifest = require_manifest(embeddings_uri)
    embedding_days = list(manifest.get("inputs", {}).get("user_interactions") or [])
    if not embedding_days:
        raise DataRejected(
            f"train_recommender: the manifest of {embeddings_uri} names no inputs.user_interactions: the users' "
            "vectors cannot be solved on the days its item vectors were fitted on"
        )
    settings = AlsSettings.from_summary(manifest.get("summary", {}))
    days = [read_events(uri, FOLD_IN_COLUMNS) for uri in [*embedding_days, *interactions_uris]]
    return FoldIn(days, items, settings), len(embedding_days)


FRESH_USERS_ENV = "MLTRAIN_FRESH_USERS_DIR"  # where the launcher left each training day's user tables


def fresh_users(days: int, global_ctr: float) -> list[FactorTable]:
    """Per training day, its users' vectors from the days before it: what that day's rows are encoded with.

    The launcher solved them once for the node (``prepare_fresh_users``) into ``$MLTRAIN_FRESH_USERS_DIR``.
    """
    folder = os.environ.get(FRESH_USERS_ENV, "")
    if not folder:
        raise RuntimeError(
            f"${FRESH_USERS_ENV} is not set: a training worker reads its users' vectors from the folder the launcher "
            "(train/launcher.py) solves them into; start training through the launcher"
        )
    return [
        FactorTable.from_arrow(pq.read_table(os.path.join(folder, f"day-{k}.parquet")), "user_id", global_ctr)
        for k in range(days)
    ]


def prepare_fresh_users(
    embeddings_uri: str, interactions_uris: Sequence[str], folder: str | None, model_users: bool
) -> tuple[pa.Table | None, pa.Table]:
    """Solve the users once per node; returns ``(the model's user table or None, the item factors)``.

    ``folder``: each training day's tables are written there, for the workers. ``model_users``: every user's
    vector through the last training day, which the model ships (it scores day D), is solved too.
    """
    item_factors = load_item_factors(embeddings_uri)
    if not folder and not model_users:
        return None, item_factors
    items = FactorTable.from_arrow(item_factors, "item_id", global_click_rate(item_factors))
    fold, first = load_fold_in(embeddings_uri, interactions_uris, items)
    if folder:
        for k in range(len(interactions_uris)):
            day = fold.users_before(first + k, only_users_of_day=True)
            pq.write_table(day, os.path.join(folder, f"day-{k}.parquet"))
    return (fold.users_before(first + len(interactions_uris)) if model_users else None), item_factors


def load_item_factors(embeddings_uri: str) -> pa.Table:
    """The committed ``interaction_embeddings`` version's item factors (its user factors are re-solved: fold_in.py)."""
    return read_table(embeddings_uri, contract.ITEM_FACTORS_FILE)


def training_labels(clicked: torch.Tensor, shuffle: bool, seed: int) -> torch.Tensor:
    """The 0/1 labels as int8 (the loss takes them as float per batch); shuffled when asked."""
    labels = clicked.to(torch.int8)
    if shuffle:
        # Breaks the link between features and labels while keeping the click rate: the gate must fail.
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed + 7_919))
        labels = labels[perm]
    return labels


def validation_split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed ``VALIDATION_FRACTION`` of the window's rows, held out of training: ``(train, validation)`` int32 indices."""
    if n >= 2**31:
        raise ValueError(f"validation_split: {n} rows do not fit int32 row indices")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 104_729))
    n_val = round(n * contract.VALIDATION_FRACTION)
    held_out = torch.zeros(n, dtype=torch.bool)
    held_out[order[:n_val]] = True
    validation = order[:n_val].sort().values.to(torch.int32)
    del order
    # The rows not held out, ascending: sorting the rest of the permutation, without its int64 copies.
    return torch.arange(n, dtype=torch.int32)[~held_out], validation


def epoch_order(n: int, num_replicas: int, rank: int, seed: int, epoch: int) -> torch.Tensor:
    """This rank's positions in ``range(n)`` for ``epoch``, as one int64 tensor.

    Exactly what ``DistributedSampler(range(n), num_replicas, rank, shuffle=True, seed=seed)``
    yields after ``set_epoch(epoch)`` (a permutation seeded by ``seed + epoch``, padded to a
    multiple of the replicas, every ``num_replicas``-th from ``rank``), without its Python
    list of ``n`` ints per epoch.
    """
    indices = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    total = math.ceil(n / num_replicas) * num_replicas
    if total > n:
        indices = torch.cat([indices, indices.repeat(math.ceil((total - n) / n))[: total - n]])
    return indices[rank:total:num_replicas]


def epoch_learning_rate(lr: float, epoch: int) -> float:
    """``lr`` decayed by ``contract.TRAIN_LR_DECAY`` per (1-based) epoch.

    A function of the epoch alone, not of the run's length: a resumed run takes the same steps, and a longer
    run resumes a shorter one's checkpoints (their fingerprint leaves ``epochs`` out).
    """
    return lr * contract.TRAIN_LR_DECAY ** (epoch - 1)


def click_labels(events: pa.Table) -> np.ndarray:
    """The ``clicked`` column as int8 numpy."""
    return pc.cast(events.column("clicked"), pa.int8()).to_numpy()


NODE_CPUS_ENV = "MLTRAIN_NODE_CPUS"  # the training pod's CPU request, whole cores (downward API, resources/k8s.py)


def node_cpus() -> int:
    """The cores this training node may use: its pod's CPU request where one is set, else the cores it may run on.

    ``os.cpu_count()`` counts the host's cores whatever the pod asked for; workers that size their thread
    pools by it oversubscribe a shared node, and OpenMP's spinning threads then stall each other.
    """
    value = os.environ.get(NODE_CPUS_ENV, "")
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"${NODE_CPUS_ENV}={value!r}: expected a whole number of cores >= 1")
        return int(value)
    return len(os.sched_getaffinity(0))


def threads_per_worker(nproc_per_node: int) -> int:
    """CPU threads each of a node's workers uses (the launcher sets OpenMP's, the worker torch's)."""
    return max(1, node_cpus() // max(1, nproc_per_node))
