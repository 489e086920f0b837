"""Synthetic ride events: realistic, learnable, deterministic days for the ``rides`` landing zone.

The simulated world, per metro (hourly Poisson demand, local time):

- size: ``rides_per_day`` is the expected total over all 8 metros, split by fixed city weights; a
  city's volume does not depend on which other cities are generated with it;
- hour-of-day profile: weekdays have commute peaks (8:00, 17:00-18:00), weekends and holidays a
  late-morning-to-evening plateau; the small hours after a Friday, a Saturday or a holiday eve are
  busy (night life), Friday and Saturday evenings get a boost, Sunday evenings a dip;
- day-of-week factors, fixed public holidays (``demand.contract.HOLIDAYS``, quieter, weekend-shaped),
  a mild upward trend;
- weather per city-hour: temperature (city climate, season, daily cycle, an anomaly that persists
  for days); storms that start at random, last 1-3 days (they can chain) and bring rain in most of
  their hours; a storm raises demand by 5-9% and each rainy hour by up to 5% more, and raises
  cancellations; cold (below 5 degC) and heat (above 30 degC) raise it a little;
- occasional city events (an evening concert or game: +35..85% for three hours);
- per ride: zones, distance, wait, trip duration, fare (surge in peaks and rain), ~3% cancellations,
  ~0.2% redelivered duplicate events (same ``ride_id``, same content).

The world (profiles, calendar, weather, events per city-hour) is ``simulate_world.py``; this module draws
the rides from it and writes them. Determinism: every latent quantity (storms, temperature anomalies, events)
is a hash of (seed, city, day or hour index), so it is derivable from the date alone and dates can be generated
in any order; per-ride draws use a generator seeded from (seed, date, city). Writing the same day
twice gives byte-identical files. Everything is vectorized with numpy (several million rides per
minute, most of it parquet encoding).

Layout written (the landing contract, ``mltrain_assets.landing``):
``{landing}/rides/date=YYYY-MM-DD/hour=HH/part-00000.parquet`` for all 24 UTC hours, then
``_SUCCESS`` (JSON: rows and a content fingerprint).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import os
import posixpath
import tempfile
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mltrain_assets.pipelines.demand.contract import CITIES, RIDES_SCHEMA
from mltrain_assets.pipelines.demand.simulate_world import (
    CITY_MODELS,
    HOUR_US,
    city_hour_conditions,
    day_number,
    hourly_base,
    key_of,
)
from mltrain_assets.sdk import UTC_TS, day_uri, filesystem, hour_uri, success_uri

DATASET = "rides"
PART_NAME = "part-00000.parquet"
DUPLICATE_RATE = 0.002
BASE_CANCEL_RATE = 0.026


# ---------------------------------------------------------------- rides


def _zone_weights(city: str) -> np.ndarray:
    order = np.random.default_rng(key_of("zones", city)).permutation(64)
    weights = 1.0 / (np.arange(64) + 3.0) ** 1.1
    out = np.empty(64)
    out[order] = weights
    return out / out.sum()


def _city_rides(date: str, city: str, rides_per_day: int, seed: int) -> pa.Table:
    model = CITY_MODELS[city]
    cond = city_hour_conditions(date, city, seed)
    lam = hourly_base(city, rides_per_day) * cond["multiplier"]
    rng = np.random.default_rng(key_of("rides", seed, date, city))
    counts = rng.poisson(lam)
    n = int(counts.sum())
    hour = np.repeat(np.arange(24), counts)
    requested = (cond["utc_hour"][hour] * HOUR_US) + rng.integers(0, HOUR_US, n)
    order = np.argsort(requested, kind="stable")
    hour, requested = hour[order], requested[order]

    rain = cond["precipitation_mm"][hour]
    rainy = rain >= 0.5
    peak = cond["shape"][hour] > 1.6
    cancelled = rng.random(n) < BASE_CANCEL_RATE + 0.03 * rainy
    before_pickup = cancelled & (rng.random(n) < 0.8)
    zones = _zone_weights(city)
    pickup_zone = rng.choice(64, size=n, p=zones).astype(np.int32)
    dropoff_zone = rng.choice(64, size=n, p=zones).astype(np.int32)
    distance = np.round(0.4 + rng.lognormal(np.log(4.5), 0.65, n), 2)
    wait_us = ((1.5 + rng.exponential(4.0, n) * (1.0 + 0.5 * rainy)) * 60e6).astype(np.int64)
    speed = model.speed_kmh * np.where(peak, 0.75, 1.0) * np.where(rainy, 0.85, 1.0) * rng.uniform(0.8, 1.2, n)
    duration_min = distance / speed * 60.0 + 2.0
    pickup = requested + wait_us
    dropoff = pickup + (duration_min * 60e6).astype(np.int64)
    surge = 1.0 + 0.3 * peak + 0.25 * (1.0 - np.exp(-rain / 1.2))
    fare = np.where(cancelled, 0.0, np.round((2.6 + model.fare_per_km * distance + 0.35 * duration_min) * surge, 2))

    seq = pc.utf8_lpad(pa.array(np.arange(n, dtype=np.int64)).cast(pa.string()), 7, "0")
    ride_id = pc.binary_join_element_wise(f"{city}-{date.replace('-', '')}-", seq, "")
    table = pa.Table.from_arrays(
        [
            ride_id,
            pa.array(np.full(n, city)),
            pa.array(requested, type=UTC_TS),
            pa.array(pickup, type=UTC_TS, mask=before_pickup),
            pa.array(dropoff, type=UTC_TS, mask=cancelled),
            pa.array(pickup_zone),
            pa.array(dropoff_zone),
            pa.array(distance),
            pa.array(fare),
            pa.array(np.where(cancelled, "cancelled", "completed")),
            pa.array(cond["temperature_c"][hour]),
            pa.array(cond["precipitation_mm"][hour]),
        ],
        schema=RIDES_SCHEMA,
    )
    # Redelivered events: the same event a second time.
    duplicates = np.flatnonzero(rng.random(n) < DUPLICATE_RATE)
    return pa.concat_tables([table, table.take(duplicates)]) if len(duplicates) else table


def simulate_rides_day(
    date: str, rides_per_day: int = 100_000, cities: Sequence[str] = CITIES, seed: int = 0
) -> pa.Table:
    """One UTC day of ride events for ``cities`` (duplicates included), sorted by request time."""
    table = pa.concat_tables([_city_rides(date, city, rides_per_day, seed) for city in _known_cities(cities)])
    return table.sort_by(_EVENT_ORDER)


_EVENT_ORDER = [("requested_at", "ascending"), ("ride_id", "ascending")]


def _known_cities(cities: Sequence[str]) -> list[str]:
    unknown = sorted(set(cities) - set(CITY_MODELS))
    if unknown:
        raise ValueError(f"unknown cities {unknown}; known: {list(CITY_MODELS)}")
    return sorted(set(cities))


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _spill_city_hours(date: str, cities: list[str], rides_per_day: int, seed: int, spill: str) -> dict[str, dict]:
    """Generate one city at a time and spill its rows by UTC hour (Arrow IPC); returns per-city figures.

    Only one city's rides are in memory at once, so a 50M-ride day fits in a few GB; each city is
    generated exactly as ``simulate_rides_day`` does, so the files written are the same bytes.
    """
    hour_starts = (day_number(date) * 24 + np.arange(25, dtype=np.int64)) * HOUR_US
    figures = {}
    for city in cities:
        table = _city_rides(date, city, rides_per_day, seed).sort_by(_EVENT_ORDER)
        bounds = np.searchsorted(table.column("requested_at").cast(pa.int64()).to_numpy(), hour_starts)
        for hour in range(24):
            path = os.path.join(spill, f"{hour:02d}-{city}.arrow")
            with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, RIDES_SCHEMA) as writer:
                writer.write_table(table.slice(bounds[hour], bounds[hour + 1] - bounds[hour]))
        figures[city] = {
            "rows": table.num_rows,
            "duplicates": table.num_rows - pc.count_distinct(table.column("ride_id")).as_py(),
            "cancelled": pc.sum(pc.equal(table.column("status"), "cancelled")).as_py() or 0,
        }
        del table
    return figures


def _hour_from_spill(spill: str, hour: int, cities: list[str]) -> pa.Table:
    parts = [pa.ipc.open_file(pa.memory_map(os.path.join(spill, f"{hour:02d}-{c}.arrow"))).read_all() for c in cities]
    return pa.concat_tables(parts).sort_by(_EVENT_ORDER)


def write_rides_day(
    landing_uri: str,
    date: str,
    rides_per_day: int = 100_000,
    cities: Sequence[str] = CITIES,
    seed: int = 0,
) -> dict:
    """Write one day under the landing contract (24 hourly part files, then ``_SUCCESS``); returns a summary.

    Memory stays bounded by the largest city (or hour) rather than the day: the rides are generated
    city by city, spilled by hour to a scratch folder, and each hour's file is written from there.
    """
    dt.date.fromisoformat(date)
    cities = _known_cities(cities)
    fs, marker_path = filesystem(success_uri(landing_uri, DATASET, date))
    if fs.exists(marker_path):
        fs.rm(marker_path)  # the day is being rewritten: not complete until the new marker lands
    fingerprint = hashlib.sha256()
    files = {}
    with tempfile.TemporaryDirectory(prefix="mltrain-simulate-") as spill:
        by_city = _spill_city_hours(date, cities, rides_per_day, seed, spill)
        for hour in range(24):
            part = _hour_from_spill(spill, hour, cities)
            data = _parquet_bytes(part)
            _, folder = filesystem(hour_uri(landing_uri, DATASET, date, hour))
            fs.makedirs(folder, exist_ok=True)
            fs.pipe_file(posixpath.join(folder, PART_NAME), data)
            fingerprint.update(hashlib.sha256(data).digest())
            files[f"hour={hour:02d}/{PART_NAME}"] = part.num_rows
    rows = sum(files.values())
    marker = {"dataset": DATASET, "date": date, "rows": rows, "files": len(files)}
    marker["sha256"] = fingerprint.hexdigest()
    fs.pipe_file(marker_path, json.dumps(marker, sort_keys=True).encode())
    return {
        "date": date,
        "uri": day_uri(landing_uri, DATASET, date),
        "rows": rows,
        "rows_by_city": {city: by_city[city]["rows"] for city in cities},
        "duplicates": sum(f["duplicates"] for f in by_city.values()),
        "cancelled": sum(f["cancelled"] for f in by_city.values()),
        "files": len(files),
        "fingerprint": marker["sha256"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write simulated ride days to a landing zone.")
    parser.add_argument("--landing-uri", required=True)
    parser.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--rides-per-day", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    first = dt.date.fromisoformat(args.start)
    for k in range(args.days):
        date = (first + dt.timedelta(days=k)).isoformat()
        summary = write_rides_day(args.landing_uri, date, args.rides_per_day, seed=args.seed)
        print(json.dumps({"date": date, "rows": summary["rows"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
