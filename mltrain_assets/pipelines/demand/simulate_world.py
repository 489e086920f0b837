"""The simulated ride world, per metro and UTC hour: demand profile, calendar, weather, events; no rides yet.

Every latent quantity (storms, temperature anomalies, city events) is a hash of (seed, city, day or hour index),
so it is derivable from the date alone and dates can be generated in any order. ``city_hour_conditions`` gives
a city's 24 hours of a date and its demand multiplier; ``simulate.py`` draws the rides from them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import numpy as np

from mltrain_assets.pipelines.demand.contract import CITIES, CITY_UTC_OFFSET_HOURS, is_holiday

HOUR_US = 3_600_000_000
EPOCH = dt.date(1970, 1, 1)
TREND_ORIGIN_DAY = (dt.date(2026, 1, 1) - EPOCH).days


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


def key_of(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def _uniform(key: int, index: np.ndarray) -> np.ndarray:
    """Uniform (0, 1) values, a pure function of (key, index)."""
    z = _mix(_mix(np.asarray(index, dtype=np.int64).astype(np.uint64) ^ np.uint64(key)))
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def _normal(key: int, index: np.ndarray) -> np.ndarray:
    u1, u2 = _uniform(key, index), _uniform(key ^ 0x5DEECE66D, index)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def day_number(date: str | dt.date) -> int:
    day = dt.date.fromisoformat(date) if isinstance(date, str) else date
    return (day - EPOCH).days


# ---------------------------------------------------------------- the latent world, per city-hour


def _storms(seed: int, city: str, local_day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(active, intensity mm/h) of the storm over each local day; storms last 1-3 days."""
    active = np.zeros(local_day.shape, dtype=bool)
    intensity = np.zeros(local_day.shape)
    for back in range(3):
        start = local_day - back
        starts = _uniform(key_of(seed, city, "storm"), start) < CITY_MODELS[city].storm_rate
        length = 1 + np.floor(_uniform(key_of(seed, city, "storm-len"), start) * 3)
        strength = 0.8 + 2.5 * _uniform(key_of(seed, city, "storm-int"), start)
        hit = starts & (length > back)
        active |= hit
        intensity = np.where(hit, np.maximum(intensity, strength), intensity)
    return active, intensity


def city_hour_conditions(date: str, city: str, seed: int = 0) -> dict[str, np.ndarray]:
    """The city's 24 UTC hours of ``date``: local calendar, weather, and the demand multiplier."""
    model = CITY_MODELS[city]
    utc_hour = day_number(date) * 24 + np.arange(24, dtype=np.int64)
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
    anomaly = sum(0.65**j * _normal(key_of(seed, city, "temp"), local_day - j) for j in range(6)) * 2.2
    storm, storm_intensity = _storms(seed, city, local_day)
    temperature = (
        model.temp_mean
        + model.temp_season * season
        + model.temp_daily * np.cos(2.0 * np.pi * (local_hour - 15) / 24.0)
        + anomaly
        + 0.5 * _normal(key_of(seed, city, "temp-hour"), utc_hour)
        - 2.5 * storm
    )
    wet = _uniform(key_of(seed, city, "wet"), utc_hour) < 0.7
    amount = -np.log(_uniform(key_of(seed, city, "rain"), utc_hour))
    shower = _uniform(key_of(seed, city, "shower"), utc_hour) < 0.02
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
    has_event = _uniform(key_of(seed, city, "event"), local_day) < 0.06
    event_start = 18 + np.floor(_uniform(key_of(seed, city, "event-start"), local_day) * 3)
    event_size = 0.35 + 0.5 * _uniform(key_of(seed, city, "event-size"), local_day)
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
    return hourly_base(city, rides_per_day) * city_hour_conditions(date, city, seed)["multiplier"]


def hourly_base(city: str, rides_per_day: int) -> float:
    return rides_per_day * _VOLUME_SCALE * CITY_MODELS[city].weight / _TOTAL_WEIGHT / 24.0
