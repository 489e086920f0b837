"""Synthetic ``interactions`` landing days: a latent-factor world with learnable click signal.

The world (users' and items' hidden taste vectors, item popularity, user activity and
devices) is fixed by the seed alone; a day's impressions are drawn from a generator
seeded by ``(seed, date)``. Every day is therefore reproducible on its own: reruns are
byte-identical and days can be generated in any order.

Click probability of an impression::

    sigmoid(TASTE_WEIGHT * taste_u(date) . item_i + quality_i + user_bias_u
            + position_bias(position) + device_effect(device) + hour_effect(hour) + noise)

``taste_u(date)`` drifts slowly and smoothly with the date (a rotation over a long
period), so yesterday's embeddings predict today well but not perfectly.

Sizes (users, items, impressions per day) are parameters; the world's arrays are O(users +
items) and a day's O(impressions): per-row features (the taste dot products) are gathered in
chunks of ``AFFINITY_CHUNK`` rows, and event ids are built by Arrow string kernels, so a
1M-user x 50k-item world with ~2.9M impressions a day takes ~1 GB and a few seconds per day.
Chunking does not touch the random draws: every size gives the bytes it always gave.
"""

from __future__ import annotations

import datetime as dt
import json
import posixpath
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mltrain_assets.pipelines.recsys.contract import INTERACTIONS_SCHEMA
from mltrain_assets.sdk import filesystem, hour_uri, success_uri

DATASET = "interactions"
GENERATOR = "mltrain.simulate.interactions/1"
PART_NAME = "part-00000.parquet"

DEFAULT_EVENTS_PER_DAY = 200_000
DEFAULT_USERS = 10_000
DEFAULT_ITEMS = 1_000

LATENT_DIM = 8
LIST_LENGTH = 10  # impressions per request: positions 0..9
DEVICES = ("ios", "android", "web")
DEVICE_SHARE = (0.45, 0.35, 0.20)
DEVICE_EFFECT = (0.25, 0.0, -0.35)
PRIMARY_DEVICE_PROB = 0.85
ZIPF_EXPONENT = 0.9  # item exposure skew
TASTE_WEIGHT = 6.0
QUALITY_WEIGHT = 0.6  # popular items are also a little more clickable
USER_BIAS_STD = 0.3
POSITION_DECAY = 0.35  # logit penalty per log(1 + position)
NOISE_STD = 0.3
INTERCEPT = -2.4
DRIFT = 0.35  # relative size of the drifting taste component
DRIFT_PERIOD_DAYS = 90.0
DUPLICATE_RATE = 0.001  # redelivered events (same event_id and content)
# Share of the day's requests per hour (UTC): quiet night, evening peak.
_HOURLY = np.array([2, 1.5, 1, 1, 1, 1.5, 2.5, 4, 5, 5, 5, 5.5, 6, 5.5, 5, 5, 5.5, 6.5, 7.5, 8, 8, 7, 5.5, 3.5])
HOURLY_SHARE = _HOURLY / _HOURLY.sum()
_EPOCH = dt.date(2020, 1, 1)
_WORLD_STREAM = 7_100
_DAY_STREAM = 7_200
AFFINITY_CHUNK = 1 << 20  # rows per gather of (rows, LATENT_DIM) taste and item vectors


@dataclass(frozen=True)
class World:
    """The hidden, date-independent state of the simulated product."""

    seed: int
    user_base: np.ndarray  # (U, d) taste
    user_drift_cos: np.ndarray  # (U, d)
    user_drift_sin: np.ndarray  # (U, d)
    user_bias: np.ndarray  # (U,)
    user_activity: np.ndarray  # (U,) request probability
    user_device: np.ndarray  # (U,) primary device index
    item_vec: np.ndarray  # (I, d)
    item_exposure: np.ndarray  # (I,) impression probability (Zipf)
    item_quality: np.ndarray  # (I,) click-logit offset

    @property
    def n_users(self) -> int:
        return len(self.user_bias)

    @property
    def n_items(self) -> int:
        return len(self.item_quality)

    def tastes(self, date: str) -> np.ndarray:
        """Users' taste vectors on ``date``: a smooth function of the date alone."""
        angle = 2 * np.pi * (dt.date.fromisoformat(date) - _EPOCH).days / DRIFT_PERIOD_DAYS
        drift = DRIFT * (np.cos(angle) * self.user_drift_cos + np.sin(angle) * self.user_drift_sin)
        return self.user_base + drift


@lru_cache(maxsize=8)
def world(n_users: int = DEFAULT_USERS, n_items: int = DEFAULT_ITEMS, seed: int = 0) -> World:
    rng = np.random.default_rng([seed, _WORLD_STREAM, n_users, n_items])
    scale = 1.0 / np.sqrt(LATENT_DIM)
    user_base = rng.standard_normal((n_users, LATENT_DIM)) * scale
    drift_cos = rng.standard_normal((n_users, LATENT_DIM)) * scale
    drift_sin = rng.standard_normal((n_users, LATENT_DIM)) * scale
    user_bias = rng.normal(0.0, USER_BIAS_STD, n_users)
    activity = rng.lognormal(0.0, 0.6, n_users)
    user_device = rng.choice(len(DEVICES), size=n_users, p=DEVICE_SHARE)
    item_vec = rng.standard_normal((n_items, LATENT_DIM)) * scale
    rank = rng.permutation(n_items)
    exposure = 1.0 / (rank + 1.0) ** ZIPF_EXPONENT
    log_exposure = np.log(exposure)
    quality = QUALITY_WEIGHT * (log_exposure - log_exposure.mean()) / log_exposure.std()
    quality = quality + rng.normal(0.0, 0.2, n_items)
    return World(
        seed=seed,
        user_base=user_base,
        user_drift_cos=drift_cos,
        user_drift_sin=drift_sin,
        user_bias=user_bias,
        user_activity=activity / activity.sum(),
        user_device=user_device,
        item_vec=item_vec,
        item_exposure=exposure / exposure.sum(),
        item_quality=quality,
    )


def position_bias(position: np.ndarray) -> np.ndarray:
    return -POSITION_DECAY * np.log1p(position)


def hour_effect(hour: np.ndarray) -> np.ndarray:
    return 0.2 * np.cos(2 * np.pi * (hour - 21) / 24.0)


def affinity(tastes: np.ndarray, item_vec: np.ndarray, user: np.ndarray, item: np.ndarray) -> np.ndarray:
    """``tastes[user] . item_vec[item]`` per row, gathered ``AFFINITY_CHUNK`` rows at a time (bounded memory)."""
    out = np.empty(len(user), np.float64)
    for start in range(0, len(user), AFFINITY_CHUNK):
        rows = slice(start, start + AFFINITY_CHUNK)
        out[rows] = np.einsum("nd,nd->n", tastes[user[rows]], item_vec[item[rows]])
    return out


def _logit(
    w: World,
    taste_affinity: np.ndarray,
    user: np.ndarray,
    item: np.ndarray,
    device: np.ndarray,
    position: np.ndarray,
    hour: np.ndarray,
) -> np.ndarray:
    return (
        TASTE_WEIGHT * taste_affinity
        + w.item_quality[item]
        + w.user_bias[user]
        + position_bias(position)
        + np.asarray(DEVICE_EFFECT)[device]
        + hour_effect(hour)
        + INTERCEPT
    )


def true_logit(
    w: World, date: str, user: np.ndarray, item: np.ndarray, device: np.ndarray, position: np.ndarray, hour: np.ndarray
) -> np.ndarray:
    """The noise-free click logit (what an oracle model would score)."""
    return _logit(w, affinity(w.tastes(date), w.item_vec, user, item), user, item, device, position, hour)


def simulate_day(
    date: str,
    events_per_day: int = DEFAULT_EVENTS_PER_DAY,
    n_users: int = DEFAULT_USERS,
    n_items: int = DEFAULT_ITEMS,
    seed: int = 0,
) -> tuple[pa.Table, dict]:
    """One day of impressions as an ``INTERACTIONS_SCHEMA`` table sorted by time, duplicates included."""
    table, stats, _ = _simulate(date, events_per_day, n_users, n_items, seed)
    return table, stats


def click_probabilities(date: str, events_per_day: int, n_users: int, n_items: int, seed: int = 0) -> pa.Table:
    """``(event_id, p_click, true_logit)`` of every unique impression of the day, recomputed from the seed.

    The sizes are required: they are part of the draws, and only the ones the day landed with give its probabilities.

    ``p_click`` is the probability the day's click was drawn from (noise included); ``true_logit``
    the noise-free logit, the best ranking any model of the impression's attributes can reach.
    Never written to the landing zone: it is what an evaluation compares a model with (``evaluate.oracle_auc``).
    """
    return _simulate(date, events_per_day, n_users, n_items, seed)[2]


def _simulate(date: str, events_per_day: int, n_users: int, n_items: int, seed: int) -> tuple[pa.Table, dict, pa.Table]:
    """The day's table, its stats and its oracle (``click_probabilities``): one set of draws for all three."""
    day = dt.date.fromisoformat(date)
    w = world(n_users, n_items, seed)
    rng = np.random.default_rng([seed, _DAY_STREAM, (day - _EPOCH).days + 100_000])
    n_requests = -(-events_per_day // LIST_LENGTH)

    req_user = rng.choice(n_users, size=n_requests, p=w.user_activity)
    req_hour = rng.choice(24, size=n_requests, p=HOURLY_SHARE)
    req_offset_us = rng.integers(0, 3_600_000_000, size=n_requests)
    other_device = rng.choice(len(DEVICES), size=n_requests, p=DEVICE_SHARE)
    req_device = np.where(rng.random(n_requests) < PRIMARY_DEVICE_PROB, w.user_device[req_user], other_device)

    # Each request shows a list of LIST_LENGTH items; impressions are one per (request, slot).
    user = np.repeat(req_user, LIST_LENGTH)[:events_per_day]
    hour = np.repeat(req_hour, LIST_LENGTH)[:events_per_day]
    device = np.repeat(req_device, LIST_LENGTH)[:events_per_day]
    position = np.tile(np.arange(LIST_LENGTH), n_requests)[:events_per_day]
    # Items in a list are shown top to bottom a few milliseconds apart.
    offset_us = np.repeat(req_offset_us, LIST_LENGTH)[:events_per_day] + position * 1_000
    offset_us = np.minimum(offset_us, 3_600_000_000 - 1)
    item = rng.choice(n_items, size=events_per_day, p=w.item_exposure)

    taste_affinity = affinity(w.tastes(date), w.item_vec, user, item)
    base_logit = _logit(w, taste_affinity, user, item, device, position, hour)
    p_click = 1.0 / (1.0 + np.exp(-(base_logit + rng.normal(0.0, NOISE_STD, events_per_day))))
    clicked = rng.random(events_per_day) < p_click
    dwell = np.exp(rng.normal(2.8 + 0.8 * taste_affinity, 0.6))
    dwell = np.where(clicked, np.round(dwell, 1), 0.0)

    midnight_us = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 1_000_000
    event_at = midnight_us + hour.astype(np.int64) * 3_600_000_000 + offset_us
    order = np.lexsort((position, user, event_at))
    user, item, device, position, hour = user[order], item[order], device[order], position[order], hour[order]
    clicked, dwell, event_at = clicked[order], dwell[order], event_at[order]
    p_click, base_logit = p_click[order], base_logit[order]

    # ~0.1% of events are redelivered: exact copies, landing in the same hour next to the original.
    n_dup = round(DUPLICATE_RATE * events_per_day)
    dup = np.sort(rng.choice(events_per_day, size=n_dup, replace=False))
    rows = np.sort(np.concatenate([np.arange(events_per_day), dup]), kind="stable")

    prefix = f"ix-{day:%Y%m%d}-s{seed}-"
    table = pa.Table.from_arrays(
        [
            _event_ids(prefix, rows),
            pa.array(user[rows].astype(np.int64)),
            pa.array(item[rows].astype(np.int64)),
            pa.array(event_at[rows], pa.int64())
            .cast(pa.timestamp("us"))
            .cast(INTERACTIONS_SCHEMA.field("event_at").type),
            pa.array(np.asarray(DEVICES, dtype=object)[device[rows]], pa.string()),
            pa.array(position[rows].astype(np.int32)),
            pa.array(clicked[rows].astype(np.int8)),
            pa.array(dwell[rows].astype(np.float64)),
        ],
        schema=INTERACTIONS_SCHEMA,
    )
    stats = {
        "events": table.num_rows,
        "unique_events": events_per_day,
        "duplicates": n_dup,
        "clicks": int(clicked.sum()),
        "click_rate": round(float(clicked.mean()), 6),
        "users": len(np.unique(user)),
        "items": len(np.unique(item)),
    }
    oracle = pa.table(
        {
            "event_id": _event_ids(prefix, np.arange(events_per_day)),
            "p_click": pa.array(p_click),
            "true_logit": pa.array(base_logit),
        }
    )
    return table, stats, oracle


def _event_ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    """``f"{prefix}{n:08d}"`` per number, built by Arrow kernels (a Python string per event costs ~2 s per million)."""
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, pa.int64()), pa.string()), 8, "0")
    return pc.binary_join_element_wise(pa.scalar(prefix), digits, "").cast(pa.string())


def write_interactions_day(
    landing_uri: str,
    date: str,
    events_per_day: int = DEFAULT_EVENTS_PER_DAY,
    n_users: int = DEFAULT_USERS,
    n_items: int = DEFAULT_ITEMS,
    seed: int = 0,
) -> dict:
    """Write one day's 24 hourly part files, then ``_SUCCESS`` (the day is complete)."""
    table, stats = simulate_day(date, events_per_day, n_users, n_items, seed)
    hours = pc.hour(table.column("event_at")).to_numpy(zero_copy_only=False)
    files = {}
    for hour in range(24):
        part = table.filter(pa.array(hours == hour))
        target_uri = posixpath.join(hour_uri(landing_uri, DATASET, date, hour), PART_NAME)
        fs, path = filesystem(target_uri)
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        with fs.open(path, "wb") as handle:
            pq.write_table(part, handle, compression="zstd")
        files[f"hour={hour:02d}/{PART_NAME}"] = part.num_rows
    marker = {
        "dataset": DATASET,
        "date": date,
        "generator": GENERATOR,
        "seed": seed,
        "n_users": n_users,
        "n_items": n_items,
        "events": stats["events"],
        "hours": 24,
    }
    fs, path = filesystem(success_uri(landing_uri, DATASET, date))
    fs.pipe_file(path, json.dumps(marker, sort_keys=True).encode())
    return {"date": date, "seed": seed, "files": files, "success_uri": success_uri(landing_uri, DATASET, date), **stats}
