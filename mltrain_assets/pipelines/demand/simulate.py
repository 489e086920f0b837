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

Determinism: every latent quantity (storms, temperature anomalies, events) is a hash of
(seed, city, day or hour index), so it is derivable from the date alone and dates can be generated
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
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mltrain_assets.artifacts import filesystem
from mltrain_assets.landing import day_uri, hour_uri, success_uri
from mltrain_assets.pipelines.demand.contract import CITIES, CITY_UTC_OFFSET_HOURS, RIDES_SCHEMA, is_holiday
from mltrain_assets.schemas import UTC_TS

DATASET = "rides"
PART_NAME = "part-00000.parquet"
HOUR_US = 3_600_000_000
EPOCH = dt.date(1970, 1, 1)
TREND_ORIGIN_DAY = (dt.date(2026, 1, 1) - EPOCH).days
DUPLICATE_RATE = 0.002
BASE_CANCEL_RATE = 0.026


@dataclass(frozen=True)
class CityModel:
    weight: float  # share of the total volume
    temp_mean: float  # annual mean, degC
    temp_season: float  # summer-winter half amplitude
    temp_daily: float  # day-night half amplitude
    storm_rate: float  # probability that a storm starts on a given day
    fare_per_km: float
    speed_kmh: float


CITY_MODELS: dict[str, CityModel] = {
    "nyc": CityModel(0.25, 13.0, 11.0, 4.0, 0.12, 2.10, 18.0),
    "la": CityModel(0.15, 18.5, 5.0, 6.0, 0.05, 1.70, 28.0),
    "chicago": CityModel(0.13, 10.5, 14.0, 5.0, 0.12, 1.80, 24.0),
    "sf": CityModel(0.11, 15.0, 3.0, 4.0, 0.09, 2.30, 22.0),
    "boston": CityModel(0.09, 11.0, 12.0, 5.0, 0.12, 2.00, 21.0),
    "seattle": CityModel(0.09, 11.5, 7.0, 4.0, 0.18, 1.90, 24.0),
    "miami": CityModel(0.10, 25.0, 4.0, 4.0, 0.15, 1.60, 27.0),
    "austin": CityModel(0.08, 21.0, 8.0, 6.0, 0.08, 1.60, 30.0),
}
assert set(CITY_MODELS) == set(CITIES)
_TOTAL_WEIGHT = sum(m.weight for m in CITY_MODELS.values())
# Calibrated so that, over a year around the trend origin, the mean daily total is ``rides_per_day``.
_VOLUME_SCALE = 1.0 / 1.077

# Relative demand by local hour (normalized below so the weekday profile averages 1).
_WEEKDAY = np.array(
    [0.45, 0.35, 0.30, 0.30, 0.40, 0.60, 1.00, 1.70, 2.00, 1.40, 1.00, 1.00,  # 00-11
     1.10, 1.05, 1.00, 1.10, 1.45, 1.95, 1.85, 1.35, 1.05, 0.95, 0.80, 0.60]  # 12-23
)  # fmt: skip
_WEEKEND = np.array(
    [0.90, 0.80, 0.65, 0.45, 0.35, 0.35, 0.45, 0.60, 0.75, 0.95, 1.15, 1.30,  # 00-11
     1.40, 1.40, 1.35, 1.30, 1.30, 1.30, 1.35, 1.35, 1.30, 1.30, 1.25, 1.10]  # 12-23
)  # fmt: skip
# The small hours (0-4) after a night out: Friday, Saturday or a holiday eve.
_NIGHT_LIFE = np.array([1.45, 1.30, 1.05, 0.70, 0.45])
_SCALE = 1.0 / _WEEKDAY.mean()
_WEEKDAY, _WEEKEND, _NIGHT_LIFE = _WEEKDAY * _SCALE, _WEEKEND * _SCALE, _NIGHT_LIFE * _SCALE
_DOW_FACTOR = np.array([0.94, 0.97, 1.00, 1.03, 1.08, 1.05, 0.90])  # Monday..Sunday
_HOLIDAY_FACTOR = 0.88


# ---------------------------------------------------------------- hashing: order-free randomness


def _mix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer on uint64 arrays (wrapping arithmetic)."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _key(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def _uniform(key: int, index: np.ndarray) -> np.ndarray:
    """Uniform (0, 1) values, a pure function of (key, index)."""
    z = _mix(_mix(np.asarray(index, dtype=np.int64).astype(np.uint64) ^ np.uint64(key)))
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def _normal(key: int, index: np.ndarray) -> np.ndarray:
    u1, u2 = _uniform(key, index), _uniform(key ^ 0x5DEECE66D, index)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _day_number(date: str | dt.date) -> int:
    day = dt.date.fromisoformat(date) if isinstance(date, str) else date
    return (day - EPOCH).days


# ---------------------------------------------------------------- the latent world, per city-hour


def _storms(seed: int, city: str, local_day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(active, intensity mm/h) of the storm over each local day; storms last 1-3 days."""
    active = np.zeros(local_day.shape, dtype=bool)
    intensity = np.zeros(local_day.shape)
    for back in range(3):
        start = local_day - back
        starts = _uniform(_key(seed, city, "storm"), start) < CITY_MODELS[city].storm_rate
        length = 1 + np.floor(_uniform(_key(seed, city, "storm-len"), start) * 3)
        strength = 0.8 + 2.5 * _uniform(_key(seed, city, "storm-int"), start)
        hit = starts & (length > back)
        active |= hit
        intensity = np.where(hit, np.maximum(intensity, strength), intensity)
    return active, intensity


def city_hour_conditions(date: str, city: str, seed: int = 0) -> dict[str, np.ndarray]:
    """The city's 24 UTC hours of ``date``: local calendar, weather, and the demand multiplier."""
    model = CITY_MODELS[city]
    utc_hour = _day_number(date) * 24 + np.arange(24, dtype=np.int64)
    local = utc_hour + CITY_UTC_OFFSET_HOURS[city]
    local_day, local_hour = local // 24, local % 24
    dow = (local_day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    days = {int(d): EPOCH + dt.timedelta(days=int(d)) for d in np.unique(np.concatenate([local_day - 1, local_day]))}
    holiday = np.array([is_holiday(days[int(d)]) for d in local_day])
    holiday_eve = np.array([is_holiday(days[int(d)] + dt.timedelta(days=1)) for d in local_day - 1])
    previous_dow = (local_day + 2) % 7
    offday = (dow >= 5) | holiday
    night_out = (previous_dow == 4) | (previous_dow == 5) | holiday_eve

    shape = np.where(offday, _WEEKEND[local_hour], _WEEKDAY[local_hour])
    early = local_hour < 5
    shape = np.where(early, np.where(night_out, _NIGHT_LIFE[np.minimum(local_hour, 4)], _WEEKDAY[local_hour]), shape)
    shape = shape * np.where((dow == 4) & (local_hour >= 19), 1.35, 1.0)
    shape = shape * np.where((dow == 5) & (local_hour >= 19), 1.15, 1.0)
    shape = shape * np.where((dow == 6) & (local_hour >= 18) & ~holiday, 0.8, 1.0)
    day_factor = _DOW_FACTOR[dow] * np.where(holiday, _HOLIDAY_FACTOR, 1.0)
    trend = 1.0 + 0.06 * (local_day - TREND_ORIGIN_DAY) / 365.0

    # Weather: climate + season + daily cycle + a multi-day anomaly; storms cool things down.
    season = np.cos(2.0 * np.pi * (local_day - 200) / 365.2425)
    anomaly = sum(0.65**j * _normal(_key(seed, city, "temp"), local_day - j) for j in range(6)) * 2.2
    storm, storm_intensity = _storms(seed, city, local_day)
    temperature = (
        model.temp_mean
        + model.temp_season * season
        + model.temp_daily * np.cos(2.0 * np.pi * (local_hour - 15) / 24.0)
        + anomaly
        + 0.5 * _normal(_key(seed, city, "temp-hour"), utc_hour)
        - 2.5 * storm
    )
    wet = _uniform(_key(seed, city, "wet"), utc_hour) < 0.7
    amount = -np.log(_uniform(_key(seed, city, "rain"), utc_hour))
    shower = _uniform(_key(seed, city, "shower"), utc_hour) < 0.02
    precipitation = np.where(storm & wet, storm_intensity * amount, np.where(shower, 0.3 * amount, 0.0))
    temperature, precipitation = np.round(temperature, 1), np.round(precipitation, 1)

    weather = (
        1.0
        # Mostly the storm as a whole (persistent, so yesterday's rain tells), a little the hour's rain.
        + 0.04 * storm
        + 0.015 * storm_intensity
        + 0.05 * (1.0 - np.exp(-precipitation / 1.2))
        + 0.006 * np.clip(5.0 - temperature, 0.0, 20.0)
        + 0.008 * np.clip(temperature - 30.0, 0.0, 10.0)
    )
    has_event = _uniform(_key(seed, city, "event"), local_day) < 0.06
    event_start = 18 + np.floor(_uniform(_key(seed, city, "event-start"), local_day) * 3)
    event_size = 0.35 + 0.5 * _uniform(_key(seed, city, "event-size"), local_day)
    event = np.where(has_event & (local_hour >= event_start) & (local_hour < event_start + 3), event_size, 0.0)

    return {
        "utc_hour": utc_hour,
        "local_hour": local_hour,
        "dow": dow,
        "holiday": holiday,
        "shape": shape,
        "temperature_c": temperature,
        "precipitation_mm": precipitation,
        "storm": storm,
        "multiplier": shape * day_factor * trend * weather * (1.0 + event),
    }


def expected_hourly_demand(date: str, city: str, rides_per_day: int = 100_000, seed: int = 0) -> np.ndarray:
    """The Poisson mean of rides requested in each UTC hour of ``date`` in ``city`` (24 values)."""
    return _hourly_base(city, rides_per_day) * city_hour_conditions(date, city, seed)["multiplier"]


def _hourly_base(city: str, rides_per_day: int) -> float:
    return rides_per_day * _VOLUME_SCALE * CITY_MODELS[city].weight / _TOTAL_WEIGHT / 24.0


# ---------------------------------------------------------------- rides


def _zone_weights(city: str) -> np.ndarray:
    order = np.random.default_rng(_key("zones", city)).permutation(64)
    weights = 1.0 / (np.arange(64) + 3.0) ** 1.1
    out = np.empty(64)
    out[order] = weights
    return out / out.sum()


def _city_rides(date: str, city: str, rides_per_day: int, seed: int) -> pa.Table:
    model = CITY_MODELS[city]
    cond = city_hour_conditions(date, city, seed)
    lam = _hourly_base(city, rides_per_day) * cond["multiplier"]
    rng = np.random.default_rng(_key("rides", seed, date, city))
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
    hour_starts = (_day_number(date) * 24 + np.arange(25, dtype=np.int64)) * HOUR_US
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
