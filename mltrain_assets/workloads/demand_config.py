"""Constants of the demand-forecasting pipeline that the control plane and the workloads share.

Windows (in days, ``D`` is the features partition):

- ``city_demand_features[D]`` holds labelled rows for days ``D-FRAME_DAYS+1 .. D`` plus the 24
  unlabelled scoring rows of ``D+1``; its features look back up to ``LAG_DAYS`` days, so it
  reads the ``ride_events`` partitions ``D-(FRAME_DAYS+LAG_DAYS-1) .. D`` (``INPUT_DAYS`` of them).
- ``city_demand_model[D, city]`` trains on the first ``FRAME_DAYS-HOLDOUT_DAYS`` labelled days and
  measures MAPE on the last ``HOLDOUT_DAYS``.

Also the public calendar the features use (holidays, the metros' UTC offsets). The simulator
follows the same calendar, as the real world follows the public one.

Bump a ``*_CODE_VERSION`` whenever the logic it names changes: it is part of every output's
version hash, so changed logic lands on new paths and old versions stay readable.
"""

from __future__ import annotations

import datetime as dt

from mltrain_assets.schemas import CITIES

# The longest look-back of any feature is a 168-hour window ending 24 hours before the row
# (hours t-191 .. t-24): 8 full days before the first labelled day.
LAG_DAYS = 8
FRAME_DAYS = 27
HOLDOUT_DAYS = 7
INPUT_DAYS = FRAME_DAYS + LAG_DAYS  # ride_events partitions one features partition reads
MIN_LAG_HOURS = 24  # we forecast all of D+1 at the end of D: no feature may look closer than this

FEATURES_CODE_VERSION = "demand-features-1"
TRAIN_CODE_VERSION = "demand-train-1"
FORECAST_CODE_VERSION = "demand-forecast-1"

MAPE_THRESHOLD = 0.15  # the promotion gate
DEFAULT_EXPERIMENT = "demand-forecast"


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
    """The ``ride_events`` partitions ``city_demand_features[date]`` reads, oldest first."""
    end = dt.date.fromisoformat(date)
    return [(end - dt.timedelta(days=k)).isoformat() for k in range(INPUT_DAYS - 1, -1, -1)]
