"""The demand-forecasting pipeline's contract: the one place for its windows, thresholds and names.

Assets, workloads, the demo, backfill and CLI all derive from this module (dagster-free, cheap to import).

Windows (in days, ``D`` is the features partition):

- ``city_hour_aggregates[D]`` reduces ``ride_events[D]`` (only) to city-hour aggregates: each raw
  day is read once, whatever the windows.
- ``city_demand_features[D]`` holds labelled rows for days ``D-FRAME_DAYS+1 .. D`` plus the 24
  unlabelled scoring rows of ``D+1``; its features look back up to ``LAG_DAYS`` days, so it
  reads the ``city_hour_aggregates`` partitions ``D-(FRAME_DAYS+LAG_DAYS-1) .. D`` (``INPUT_DAYS``
  of them).
- ``city_demand_model[D, city]`` trains on the first ``FRAME_DAYS-HOLDOUT_DAYS`` labelled days and
  measures MAPE on the last ``HOLDOUT_DAYS``.

Also the public calendar the features use (holidays, the metros' UTC offsets). The simulator
follows the same calendar, as the real world follows the public one.

Each workload's code version is derived from its source (``workloads.common.code_version``): it is
part of every output's version hash, so changed logic lands on new paths and old versions stay readable.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from mltrain_assets.sdk import UTC_TS, DatasetSpec, Window

CITIES = ("nyc", "sf", "chicago", "la", "seattle", "austin", "boston", "miami")

# The longest look-back of any feature is a 168-hour window ending 24 hours before the row
# (hours t-191 .. t-24): 8 full days before the first labelled day.
LAG_DAYS = 8
FRAME_DAYS = 27
HOLDOUT_DAYS = 7
INPUT_DAYS = FRAME_DAYS + LAG_DAYS  # city_hour_aggregates partitions one features partition reads
FEATURES_WINDOW = Window(days=INPUT_DAYS)  # city_hour_aggregates D-34 .. D for city_demand_features[D]
HOLDOUT_WINDOW = Window(days=HOLDOUT_DAYS)  # the labelled days D-6 .. D city_demand_model[D] is judged on
MIN_LAG_HOURS = 24  # we forecast all of D+1 at the end of D: no feature may look closer than this

MAPE_THRESHOLD = 0.15  # the promotion gate: held-out MAPE must be below it
EXPERIMENT_NAME = "demand-forecast"


def registered_model_name(city: str) -> str:
    """The MLflow registered model of one city's demand forecaster."""
    return f"demand-forecast-{city}"


# Fixed UTC offsets (standard time; daylight saving is ignored on purpose: the simulator does too).
CITY_UTC_OFFSET_HOURS: dict[str, int] = {
    "nyc": -5,
    "sf": -8,
    "chicago": -6,
    "la": -8,
    "seattle": -8,
    "austin": -6,
    "boston": -5,
    "miami": -5,
}
assert set(CITY_UTC_OFFSET_HOURS) == set(CITIES)

HOLIDAY_YEARS = range(2020, 2036)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    """The n-th (1-based; -1 = last) ``weekday`` (Monday=0) of a month."""
    if n > 0:
        first = dt.date(year, month, 1)
        return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    last = (dt.date(year, month + 1, 1) if month < 12 else dt.date(year + 1, 1, 1)) - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def holidays_of_year(year: int) -> list[dt.date]:
    """The public holidays both the simulated world and the features know about."""
    return [
        dt.date(year, 1, 1),  # New Year's Day
        _nth_weekday(year, 5, 0, -1),  # Memorial Day
        dt.date(year, 7, 4),  # Independence Day
        _nth_weekday(year, 9, 0, 1),  # Labor Day
        _nth_weekday(year, 11, 3, 4),  # Thanksgiving
        dt.date(year, 12, 25),  # Christmas Day
    ]


HOLIDAYS: tuple[dt.date, ...] = tuple(sorted(d for y in HOLIDAY_YEARS for d in holidays_of_year(y)))
_HOLIDAY_SET = frozenset(HOLIDAYS)


def is_holiday(day: dt.date) -> bool:
    return day in _HOLIDAY_SET


def input_dates(date: str) -> list[str]:
    """The (aggregated) days ``city_demand_features[date]`` reads, oldest first."""
    return FEATURES_WINDOW.dates(date)


RIDES_SCHEMA = pa.schema(
    [
        pa.field("ride_id", pa.string(), nullable=False),  # unique per ride; redelivered events repeat it
        pa.field("city", pa.string(), nullable=False),  # one of CITIES
        pa.field("requested_at", UTC_TS, nullable=False),  # rider request time; defines the hour bucket
        pa.field("pickup_at", UTC_TS),  # null when cancelled before pickup
        pa.field("dropoff_at", UTC_TS),  # null when cancelled
        pa.field("pickup_zone", pa.int32(), nullable=False),  # city zone id, 0..63
        pa.field("dropoff_zone", pa.int32(), nullable=False),
        pa.field("distance_km", pa.float64(), nullable=False),  # >= 0
        pa.field("fare_usd", pa.float64(), nullable=False),  # >= 0 (0 when cancelled)
        pa.field("status", pa.string(), nullable=False),  # 'completed' | 'cancelled'
        pa.field("temperature_c", pa.float64(), nullable=False),  # weather at request time
        pa.field("precipitation_mm", pa.float64(), nullable=False),  # >= 0, rain in that hour
    ]
)

# What a valid ride satisfies (DuckDB predicates by rule name); ingestion quarantines the rest.
RIDES_RULES = {
    "ride_id_present": "ride_id IS NOT NULL AND length(ride_id) > 0",
    "known_city": "city IN (" + ", ".join(f"'{c}'" for c in CITIES) + ")",
    "valid_status": "status IN ('completed', 'cancelled')",
    "non_negative_fare": "fare_usd >= 0",
    "non_negative_distance": "distance_km >= 0",
    "non_negative_precipitation": "precipitation_mm >= 0",
    "dropoff_after_pickup": "dropoff_at IS NULL OR pickup_at IS NULL OR dropoff_at >= pickup_at",
}
RIDES = DatasetSpec("rides", RIDES_SCHEMA, "ride_id", "requested_at", RIDES_RULES, 1_000, count_by=("city",))

# The days a date needs landed, oldest first (demo, backfill, CLI).
LANDING_WINDOW = FEATURES_WINDOW
