"""The click model's input: one impression encoded as features over frozen user/item vectors.

Item vectors are ALS's; user vectors are ALS's user step solved again over every day before the day
scored (``fold_in.py``), so a training row of day t sees its user as of t-1 and the model scores day D
with its users as of D-1.

Features of one impression (``encode``): the element-wise product of the user and item
vectors and their dot product (the two-tower interaction), both vectors, window activity
of the user and the item (log impressions, smoothed click rate: the popularity fallback
for cold items), known-user/known-item flags, device (one-hot), list position (one-hot,
clipped) and hour of day (sin/cos). Impressions are kept as compact index rows
(``EncodedRows``) and encoded to float features batch by batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from mltrain_assets.pipelines.recsys import contract

DEVICES = ("ios", "android", "web")
# A saved model records it; loading refuses another (``encode`` would lay its features out differently).
FEATURE_VERSION = 1
CTR_PRIOR_WEIGHT = 20.0  # pseudo-impressions pulling a sparse click rate towards the global one
SCORE_CHUNK = 262_144


def feature_layout(rank: int, max_position: int = contract.MAX_POSITION) -> dict[str, slice]:
    """The column range of each feature group in ``encode``'s output, in order."""
    widths = {
        "user_item_product": rank,  # u*v
        "user_item_dot": 1,
        "user_vector": rank,
        "item_vector": rank,
        "user_stats": 3,  # log impressions, smoothed ctr, known
        "item_stats": 3,
        "device": len(DEVICES),
        "position": max_position + 1,
        "hour": 2,  # sin, cos
    }
    layout, start = {}, 0
    for name, width in widths.items():
        layout[name] = slice(start, start + width)
        start += width
    return layout


def feature_dim(rank: int, max_position: int = contract.MAX_POSITION) -> int:
    return feature_layout(rank, max_position)["hour"].stop


@dataclass
class FactorTable:
    """ALS vectors and window activity, row 0 reserved for unknown ids (zero vector, global click rate)."""

    ids: np.ndarray  # sorted int64 ids; row i+1 of the tensors belongs to ids[i]
    vectors: torch.Tensor  # (n+1, rank) float32
    stats: torch.Tensor  # (n+1, 3) float32: log1p(impressions)/5, smoothed ctr, known flag
    impressions: np.ndarray  # (n,) int64 window counts per id (popularity for retrieval)
    clicks: np.ndarray  # (n,) int64

    @classmethod
    def from_arrow(cls, table: pa.Table, id_column: str, global_ctr: float) -> FactorTable:
        table = table.sort_by(id_column)
        ids = table.column(id_column).to_numpy().astype(np.int64)
        n = len(ids)
        flat = table.column("factors").combine_chunks()
        rank = len(flat[0]) if n else 0
        vectors = np.zeros((n + 1, rank), np.float32)
        if n:
            vectors[1:] = flat.flatten().to_numpy(zero_copy_only=False).reshape(n, rank)
        impressions = table.column("impressions").to_numpy().astype(np.int64) if n else np.zeros(0, np.int64)
        clicks = table.column("clicks").to_numpy().astype(np.int64) if n else np.zeros(0, np.int64)
        stats = np.zeros((n + 1, 3), np.float32)
        stats[0] = (0.0, global_ctr, 0.0)
        stats[1:, 0] = np.log1p(impressions) / 5.0
        stats[1:, 1] = (clicks + CTR_PRIOR_WEIGHT * global_ctr) / (impressions + CTR_PRIOR_WEIGHT)
        stats[1:, 2] = 1.0
        return cls(ids, torch.from_numpy(vectors), torch.from_numpy(stats), impressions, clicks)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Row index per id (int32); unknown ids map to row 0 (cold start)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(self.ids) == 0:
            return np.zeros(len(ids), np.int32)
        pos = np.searchsorted(self.ids, ids)
        pos_clipped = np.minimum(pos, len(self.ids) - 1)
        return np.where(self.ids[pos_clipped] == ids, pos_clipped + 1, 0).astype(np.int32)


def global_click_rate(item_factors: pa.Table) -> float:
    impressions = pc.sum(item_factors.column("impressions")).as_py() or 0
    clicks = pc.sum(item_factors.column("clicks")).as_py() or 0
    return float(clicks) / impressions if impressions else 0.0


@dataclass
class EncodedRows:
    """Impressions as compact index tensors (14 bytes a row); ``encode`` builds the float features per batch."""

    user_row: torch.Tensor  # int32 row of the user's FactorTable (0: unknown)
    item_row: torch.Tensor  # int32
    device: torch.Tensor  # int8 index into DEVICES, -1 unknown
    position: torch.Tensor  # int8, clipped to 0..max_position
    hour: torch.Tensor  # float32, 0..24

    def __len__(self) -> int:
        return len(self.user_row)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.user_row, self.item_row, self.device, self.position, self.hour

    def take(self, index: torch.Tensor) -> EncodedRows:
        return EncodedRows(*(t[index] for t in self.tensors()))

    def slice(self, start: int, stop: int) -> EncodedRows:
        return EncodedRows(*(t[start:stop] for t in self.tensors()))

    def to(self, device: torch.device) -> EncodedRows:
        return EncodedRows(*(t.to(device) for t in self.tensors()))

    @classmethod
    def empty(cls, n: int) -> EncodedRows:
        """``n`` uninitialised rows, to be filled in place (``fill``) file by file."""
        return cls(
            torch.empty(n, dtype=torch.int32),
            torch.empty(n, dtype=torch.int32),
            torch.empty(n, dtype=torch.int8),
            torch.empty(n, dtype=torch.int8),
            torch.empty(n, dtype=torch.float32),
        )

    def fill(self, start: int, part: EncodedRows) -> None:
        for target, source in zip(self.tensors(), part.tensors(), strict=True):
            target[start : start + len(part)] = source


def _compact_rows(
    users: FactorTable,
    items: FactorTable,
    user_id: np.ndarray,
    item_id: np.ndarray,
    device: np.ndarray,
    position: np.ndarray,
    hour: np.ndarray,
    max_position: int,
) -> EncodedRows:
    return EncodedRows(
        torch.from_numpy(users.rows(user_id)),
        torch.from_numpy(items.rows(item_id)),
        torch.from_numpy(np.ascontiguousarray(device, dtype=np.int8)),
        torch.from_numpy(np.clip(np.asarray(position, dtype=np.int64), 0, max_position).astype(np.int8)),
        torch.from_numpy(np.ascontiguousarray(hour, dtype=np.float32)),
    )


def encode_rows(
    frame: pd.DataFrame | pa.Table,
    users: FactorTable,
    items: FactorTable,
    max_position: int = contract.MAX_POSITION,
) -> EncodedRows:
    """Map impressions (user_id, item_id, device, position, event_at or hour) to compact index tensors.

    ``frame`` is a pandas frame (the pyfunc model's input) or an Arrow table (committed events,
    read without a Python object per string); both give the same rows. Hour of day is
    ``hour + minute / 60`` of ``event_at`` in UTC, unless the frame has an ``hour`` column.
    """
    if max_position > np.iinfo(np.int8).max:
        raise ValueError(f"max_position {max_position} does not fit the int8 position index")
    if isinstance(frame, pa.Table):
        return _encode_arrow(frame, users, items, max_position)
    device_index = {name: i for i, name in enumerate(DEVICES)}
    device = frame["device"].map(device_index).fillna(-1).to_numpy(dtype=np.int8)
    if "hour" in frame.columns:
        hour = frame["hour"].to_numpy(dtype=np.float32)
    else:
        at = pd.to_datetime(frame["event_at"], utc=True)
        hour = (at.dt.hour + at.dt.minute / 60.0).to_numpy(dtype=np.float32)
    return _compact_rows(
        users, items, frame["user_id"].to_numpy(), frame["item_id"].to_numpy(), device,
        frame["position"].to_numpy(), hour, max_position,
    )  # fmt: skip


def _encode_arrow(table: pa.Table, users: FactorTable, items: FactorTable, max_position: int) -> EncodedRows:
    device = pc.index_in(table.column("device"), value_set=pa.array(DEVICES)).fill_null(-1)
    if "hour" in table.column_names:
        hour = table.column("hour").to_numpy().astype(np.float32)
    else:
        at = table.column("event_at")
        if at.type.tz is not None and at.type.tz != "UTC":
            at = at.cast(pa.timestamp(at.type.unit, "UTC"))
        minutes = pc.minute(at).to_numpy().astype(np.float64)
        hour = (pc.hour(at).to_numpy() + minutes / 60.0).astype(np.float32)
    return _compact_rows(
        users, items, table.column("user_id").to_numpy(), table.column("item_id").to_numpy(),
        device.to_numpy(), table.column("position").to_numpy(), hour, max_position,
    )  # fmt: skip


def encode(
    rows: EncodedRows, users: FactorTable, items: FactorTable, max_position: int = contract.MAX_POSITION
) -> torch.Tensor:
    """Dense float32 features for a batch of rows."""
    u = users.vectors[rows.user_row]
    v = items.vectors[rows.item_row]
    uv = u * v
    # One-hots built on the rows' own device (CPU or GPU); an unknown device is all zeros.
    known_device = (rows.device >= 0).unsqueeze(1)
    device = nn.functional.one_hot(rows.device.clamp_min(0).long(), len(DEVICES)).float() * known_device
    position = nn.functional.one_hot(rows.position.long(), max_position + 1).float()
    angle = rows.hour * (2 * np.pi / 24.0)
    return torch.cat(
        [
            uv,
            uv.sum(dim=1, keepdim=True),
            u,
            v,
            users.stats[rows.user_row],
            items.stats[rows.item_row],
            device,
            position,
            torch.sin(angle).unsqueeze(1),
            torch.cos(angle).unsqueeze(1),
        ],
        dim=1,
    )


@torch.no_grad()
def feature_statistics(
    rows: EncodedRows,
    users: FactorTable,
    items: FactorTable,
    max_position: int = contract.MAX_POSITION,
    chunk: int = SCORE_CHUNK,
    index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of every feature over ``rows`` (or ``rows.take(index)``, taken chunk by chunk).

    float64 sums in fixed chunks: deterministic, and the same with or without ``index``.
    """
    total = torch.zeros(feature_dim(users.vectors.shape[1], max_position), dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    n = len(rows) if index is None else len(index)
    for start in range(0, n, chunk):
        part = rows.slice(start, start + chunk) if index is None else rows.take(index[start : start + chunk])
        x = encode(part, users, items, max_position).double().cpu()
        total += x.sum(dim=0)
        total_sq += (x * x).sum(dim=0)
    n = max(n, 1)
    mean = total / n
    std = (total_sq / n - mean * mean).clamp_min(0).sqrt()
    return mean.float(), std.float()
