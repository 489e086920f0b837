"""The training window as the worker and the launcher both read it: events, frozen factors, labels, split."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from mltrain_assets.artifacts import read_table
from mltrain_assets.workloads.common.runtime import DataRejected
from mltrain_assets.workloads.ingest.params import EVENTS_FILE
from mltrain_assets.workloads.recsys import contract

EVENT_COLUMNS = ["user_id", "item_id", "device", "position", "event_at", "clicked"]


def load_events(uris: Sequence[str], columns: list[str] = EVENT_COLUMNS) -> pd.DataFrame:
    """Concatenate committed ``user_interactions`` versions' events, in the given order."""
    frames = [read_table(uri, EVENTS_FILE, columns).to_pandas() for uri in uris]
    if not frames:
        raise DataRejected("train_recommender: no training days given")
    return pd.concat(frames, ignore_index=True)


def load_factors(embeddings_uri: str) -> tuple[pa.Table, pa.Table]:
    """The committed ``interaction_embeddings`` version's ``(user_factors, item_factors)``."""
    return read_table(embeddings_uri, contract.USER_FACTORS_FILE), read_table(
        embeddings_uri, contract.ITEM_FACTORS_FILE
    )


def training_labels(clicked: np.ndarray, shuffle: bool, seed: int) -> torch.Tensor:
    labels = torch.from_numpy(clicked.astype(np.float32))
    if shuffle:
        # Breaks the link between features and labels while keeping the click rate: the gate must fail.
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed + 7_919))
        labels = labels[perm]
    return labels


def validation_split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed ``VALIDATION_FRACTION`` of the window's rows, held out of training: ``(train, validation)`` indices."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 104_729))
    n_val = round(n * contract.VALIDATION_FRACTION)
    return order[n_val:].sort().values, order[:n_val].sort().values


def threads_per_worker(nproc_per_node: int) -> int:
    """CPU threads each of a node's workers uses (the launcher sets OpenMP's, the worker torch's)."""
    return max(1, (os.cpu_count() or 1) // max(1, nproc_per_node))
