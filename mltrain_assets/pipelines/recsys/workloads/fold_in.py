"""Fresh user vectors: ALS's user step solved again over every day before the day scored, item vectors fixed.

ALS fits users and items on the embeddings window (D-14..D-8); by day D a user's vector is 8 to 14 days
old and rests on a week of impressions (~20 at seed scale). Items are seen by thousands of users and
keep their ALS vectors; each user's vector is re-solved ("folded in", Hu, Koren & Volinsky 2008) with
exactly Spark's implicit normal equations (``als.aggregate_window``'s ratings, ``alpha``, ``reg`` scaled
by the user's positive ratings) over the embeddings window *plus* the days that followed it:

- a training row of day ``t`` gets its user's vector from the days before ``t`` (never its own day, so no
  label reaches its feature);
- the model ships the vectors through D-1, which score day D and serve afterwards.

The window counts (impressions, clicks) of a user are the same days' counts. Everything is numpy in
float64 with fixed reduction order: the same inputs give the same bytes in every worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse
import torch

from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.pipelines.recsys.workloads.als import MICRO_UNITS
from mltrain_assets.pipelines.recsys.workloads.features import FactorTable

FOLD_IN_COLUMNS = ["user_id", "item_id", "clicked", "dwell_seconds"]


@dataclass(frozen=True)
class AlsSettings:
    """The implicit-feedback settings the item vectors were fitted with (the embeddings version's)."""

    reg: float = contract.ALS_REG
    alpha: float = contract.ALS_ALPHA
    negative_weight: float = contract.ALS_NEGATIVE_WEIGHT
    dwell_log_scale: float = contract.ALS_DWELL_LOG_SCALE

    @classmethod
    def from_summary(cls, summary: dict) -> AlsSettings:
        """The settings an embeddings version recorded (``als_settings``); defaults for versions that did not."""
        recorded = summary.get("als_settings") or {}
        return cls(**{name: float(recorded[name]) for name in cls.__dataclass_fields__ if name in recorded})


def micro_ratings(clicked: np.ndarray, dwell_seconds: np.ndarray, settings: AlsSettings) -> np.ndarray:
    """Each impression's rating in micro-units: a click ``1 + log1p(dwell) / scale``, else ``-negative_weight``."""
    click_weight = 1.0 + np.log1p(np.maximum(np.nan_to_num(dwell_seconds, nan=0.0), 0.0)) / settings.dwell_log_scale
    weight = np.where(clicked == 1, click_weight, -settings.negative_weight)
    return np.round(weight * MICRO_UNITS).astype(np.int64)


class FoldIn:
    """Days of impressions in order, ready to solve every user's vector as of the start of any of those days."""

    def __init__(self, days: Sequence[pa.Table], items: FactorTable, settings: AlsSettings):
        self.settings = settings
        self.day_ends = np.cumsum([day.num_rows for day in days])
        user_id = np.concatenate([day.column("user_id").to_numpy().astype(np.int64) for day in days])
        item_row = np.concatenate([items.rows(day.column("item_id").to_numpy()) for day in days])
        clicked = np.concatenate([day.column("clicked").to_numpy().astype(np.int8) for day in days])
        dwell = np.concatenate(
            [day.column("dwell_seconds").to_numpy(zero_copy_only=False).astype(np.float64) for day in days]
        )
        self.rating = micro_ratings(clicked, dwell, settings)
        del dwell
        self.clicked = clicked
        # int32 row indices: 40M rows (two weeks at seed volume) cost 160 MB each, not 320.
        self.user_ids, user_index = np.unique(user_id, return_inverse=True)
        del user_id
        keys = user_index * (len(items.ids) + 1) + item_row
        self.user_index = user_index.astype(np.int32)
        del user_index, item_row
        pair_keys, pair_of_row = np.unique(keys, return_inverse=True)
        del keys
        self.pair_of_row = pair_of_row.astype(np.int32)
        del pair_of_row
        self.pair_user = (pair_keys // (len(items.ids) + 1)).astype(np.int32)
        self.pair_item = (pair_keys % (len(items.ids) + 1)).astype(np.int32)
        vectors = items.vectors.numpy().astype(np.float64)
        self.item_vectors = vectors
        self.gram = vectors.T @ vectors  # YtY: every item ALS solved (unsolved items are zero rows)
        rows, cols = np.triu_indices(self.rank)
        self.item_outer = vectors[:, rows] * vectors[:, cols]  # each item's v v^T, upper triangle

    @property
    def rank(self) -> int:
        return self.item_vectors.shape[1]

    def users_before(self, day: int, only_users_of_day: bool = False) -> pa.Table:
        """Every user seen before day ``day`` (0-based) with the vector and counts of those days.

        ``only_users_of_day``: just the users with an impression on day ``day`` (what its rows need).
        The table has ``user_factors``' columns: user_id, factors, impressions, clicks.
        """
        end = int(self.day_ends[day - 1]) if day > 0 else 0
        n_users = len(self.user_ids)
        impressions = np.bincount(self.user_index[:end], minlength=n_users)
        clicks = np.bincount(self.user_index[:end], weights=self.clicked[:end], minlength=n_users).astype(np.int64)
        wanted = impressions > 0
        if only_users_of_day:  # day ``day``'s rows start where the days before it end
            of_day = np.zeros(n_users, bool)
            of_day[self.user_index[end : int(self.day_ends[day])]] = True
            wanted &= of_day
        vectors = self._solve(end, wanted)
        users = np.flatnonzero(wanted)
        return pa.table(
            {
                "user_id": pa.array(self.user_ids[users]),
                "factors": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), self.rank),
                "impressions": pa.array(impressions[users]),
                "clicks": pa.array(clicks[users]),
            }
        )

    def _solve(self, end: int, wanted: np.ndarray) -> np.ndarray:
        """Float32 vectors of the ``wanted`` users from rows ``[:end]``: Spark's implicit normal equations per user."""
        n_pairs, rank = len(self.pair_user), self.rank
        micro = np.bincount(self.pair_of_row[:end], weights=self.rating[:end], minlength=n_pairs)
        keep = (micro != 0) & (self.pair_item > 0) & wanted[self.pair_user]
        rating, pair_item = micro[keep] / MICRO_UNITS, self.pair_item[keep]
        users = np.flatnonzero(wanted)
        slot = np.full(len(wanted), -1, np.int64)
        slot[users] = np.arange(len(users))
        pair_slot = slot[self.pair_user[keep]]
        positive = rating > 0
        n_positive = np.bincount(pair_slot[positive], minlength=len(users))
        confidence = self.settings.alpha * np.abs(rating)  # c - 1
        shape = (len(users), len(self.item_vectors))
        # Sum_i c_ui v_i v_i^T for every user at once: a sparse (user x item) product with each item's outer
        # product (upper triangle), instead of an outer product per (user, item) pair.
        upper = scipy.sparse.csr_matrix((confidence, (pair_slot, pair_item)), shape=shape) @ self.item_outer
        weights = np.where(positive, 1.0 + confidence, 0.0)
        atb = scipy.sparse.csr_matrix((weights, (pair_slot, pair_item)), shape=shape) @ self.item_vectors
        ata = np.zeros((len(users), rank, rank))
        rows, cols = np.triu_indices(rank)
        ata[:, rows, cols] = upper
        ata[:, cols, rows] = upper
        solved = n_positive > 0  # like ALS: a user with no positive rating keeps a zero vector
        out = np.zeros((len(users), rank), np.float64)
        if solved.any():
            a = ata[solved] + self.gram
            a += (self.settings.reg * n_positive[solved])[:, None, None] * np.eye(rank)
            out[solved] = np.linalg.solve(a, atb[solved][:, :, None])[:, :, 0]
        return out.astype(np.float32)


def stack_tables(tables: Sequence[FactorTable]) -> tuple[FactorTable, list[int]]:
    """One table holding ``tables``' rows one block after another (row 0 unknown), and each block's offset.

    Row ``r > 0`` of block ``k`` is row ``offsets[k] + r`` of the stack: a row of day ``k`` finds its user there.
    """
    offsets, vectors, stats = [], [tables[0].vectors[:1]], [tables[0].stats[:1]]
    ids, impressions, clicks, total = [], [], [], 0
    for table in tables:
        offsets.append(total)
        vectors.append(table.vectors[1:])
        stats.append(table.stats[1:])
        ids.append(table.ids)
        impressions.append(table.impressions)
        clicks.append(table.clicks)
        total += len(table.ids)
    return (
        FactorTable(
            np.concatenate(ids),
            torch.cat(vectors),
            torch.cat(stats),
            np.concatenate(impressions),
            np.concatenate(clicks),
        ),
        offsets,
    )
