"""The city-hour demand features, defined once as SQL text that runs unchanged on Spark SQL and DuckDB.

Two statements, in two steps (set up by the engine adapter in ``sql_engines``, the only
engine-specific part):

- ``HOURLY_SQL`` (``city_hour_aggregates``, once per day) reads ``rides``: one row per ride event
  with ``city``, ``hour_idx`` (BIGINT: whole hours since 1970-01-01 00:00 UTC of
  ``requested_at``), ``status``, ``fare_usd``, ``distance_km``, ``temperature_c``,
  ``precipitation_mm``; it writes one row per city-hour with rides.
- ``feature_sql`` (``city_demand_features``) reads ``hourly``, those aggregates over the window's
  days, and ``hour_grid``: every (``city``, ``hour_idx``) to produce, history included, so hours
  without rides are zero-demand rows and ``LAG(x, n)`` over a city's rows is "n hours earlier".
  An hour lies within one UTC day, so the per-day aggregates are exactly the window's.

Rules the definitions follow:

- Every feature of the row for hour ``t`` reads data at ``t - MIN_LAG_HOURS`` (24) or earlier:
  lags are >= 24 hours and rolling windows end 24 hours before the row. A forecast for all of
  ``D+1`` made at the end of ``D`` therefore uses only data up to ``D``, and the training rows see
  exactly what the scoring rows will see. Weather is only used lagged (tomorrow's is unknown).
- The common subset of both dialects: integer arithmetic on ``hour_idx`` instead of date
  functions (whose conventions differ: day-of-week numbering, time zones), ``LAG`` and
  ``ROWS BETWEEN`` windows, ``CASE``, ``NULLIF`` around every divisor (Spark's ANSI mode raises
  on division by zero), ``SIN``/``COS``/``PI``/``SQRT``/``LEAST``/``GREATEST``/``FLOOR``, and every
  output column cast to ``DOUBLE``.
- Local calendar features use the metros' fixed UTC offsets and the public holiday list of
  ``contract`` (rendered into the SQL as day numbers).
"""

from __future__ import annotations

import datetime as dt

from mltrain_assets.pipelines.demand.contract import CITY_UTC_OFFSET_HOURS, HOLIDAYS, MIN_LAG_HOURS

LABEL = "demand"
NAIVE_FEATURE = "demand_lag_24h"  # "same hour yesterday": the naive forecast
KEY_COLUMNS = ("city", "ts")  # the key of the committed features table
_EPOCH = dt.date(1970, 1, 1)
_W = "PARTITION BY city ORDER BY hour_idx"

# Besides "same hour last week" (168h), weekly lags stay out on purpose: on holidays they point at an
# ordinary weekday; the day-type-matched baselines carry that information instead.
DEMAND_LAGS = [*range(24, 53), 71, 72, 73, 95, 96, 97, 119, 120, 121, 143, 144, 145, 168]
ROLLING_HOURS = [2, 3, 4, 6, 8, 12, 24, 48, 72, 96, 120, 144, 168]
ROLLING_STATS = {"mean": "AVG", "std": "STDDEV_SAMP", "min": "MIN", "max": "MAX"}


def _lag(column: str, hours: int) -> str:
    assert hours >= MIN_LAG_HOURS, f"lag {hours}h < {MIN_LAG_HOURS}h"
    return f"LAG({column}, {hours}) OVER ({_W})"


def _window(agg: str, expr: str, hours: int, end: int = MIN_LAG_HOURS) -> str:
    """``agg(expr)`` over the ``hours`` hours that end ``end`` (default ``MIN_LAG_HOURS``) hours before the row."""
    assert end >= MIN_LAG_HOURS, f"window ending {end}h < {MIN_LAG_HOURS}h before the row"
    first = end + hours - 1
    return f"{agg}({expr}) OVER ({_W} ROWS BETWEEN {first} PRECEDING AND {end} PRECEDING)"


def _ratio(numerator: str, denominator: str) -> str:
    return f"({numerator}) / NULLIF({denominator}, 0)"


def _flag(condition: str) -> str:
    return f"CASE WHEN {condition} THEN 1 ELSE 0 END"


def _window_features() -> list[tuple[str, str]]:
    """First level: lags and rolling windows over a city's hourly series (stage ``level1``)."""
    f: list[tuple[str, str]] = []
    f += [(f"demand_lag_{h}h", _lag("demand_obs", h)) for h in DEMAND_LAGS]
    for hours in ROLLING_HOURS:
        f += [
            (f"demand_roll_{stat}_{hours}h", _window(agg, "demand_obs", hours)) for stat, agg in ROLLING_STATS.items()
        ]

    for h in (24, 48, 72):
        f.append((f"cancel_ratio_lag_{h}h", _ratio(_lag("cancelled", h), _lag("demand_obs", h))))
        f.append((f"avg_fare_lag_{h}h", _ratio(_lag("fare_sum", h), _lag("completed", h))))
        f.append((f"avg_distance_lag_{h}h", _ratio(_lag("distance_sum", h), _lag("completed", h))))
    for hours in (24, 72, 168):
        f.append(
            (
                f"cancel_ratio_roll_{hours}h",
                _ratio(_window("SUM", "cancelled", hours), _window("SUM", "demand_obs", hours)),
            )
        )
        f.append(
            (f"avg_fare_roll_{hours}h", _ratio(_window("SUM", "fare_sum", hours), _window("SUM", "completed", hours)))
        )
        f.append(
            (
                f"avg_distance_roll_{hours}h",
                _ratio(_window("SUM", "distance_sum", hours), _window("SUM", "completed", hours)),
            )
        )
    f += [(f"completed_lag_{h}h", _lag("completed", h)) for h in (24, 48)]
    f.append(("completed_roll_sum_24h", _window("SUM", "completed", 24)))

    f += [(f"temperature_lag_{h}h", _lag("temperature", h)) for h in (24, 25, 26, 27, 48, 72, 96)]
    f += [(f"temperature_roll_mean_{hours}h", _window("AVG", "temperature", hours)) for hours in (6, 24, 72, 168)]
    f += [("temperature_roll_min_24h", _window("MIN", "temperature", 24))]
    f += [("temperature_roll_max_24h", _window("MAX", "temperature", 24))]
    f += [(f"precipitation_lag_{h}h", _lag("precipitation", h)) for h in (24, 25, 26, 27, 28, 48, 72)]
    f += [
        (f"precipitation_roll_sum_{hours}h", _window("SUM", "precipitation", hours))
        for hours in (3, 6, 12, 24, 48, 72, 168)
    ]
    f += [(f"precipitation_roll_max_{hours}h", _window("MAX", "precipitation", hours)) for hours in (24, 72)]
    rainy = _flag("precipitation >= 0.5")
    f += [(f"rainy_hours_roll_{hours}h", _window("SUM", rainy, hours)) for hours in (24, 72, 168)]
    # The weather when "same hour last week" happened: a stormy week ago inflates that baseline.
    f += [("temperature_lag_168h", _lag("temperature", 168)), ("precipitation_lag_168h", _lag("precipitation", 168))]
    f += [
        ("precipitation_roll_sum_24h_week_ago", _window("SUM", "precipitation", 24, end=168)),
        ("rainy_hours_roll_24h_week_ago", _window("SUM", rainy, 24, end=168)),
        ("temperature_roll_mean_24h_week_ago", _window("AVG", "temperature", 24, end=168)),
    ]

    f += [(f"all_city_demand_lag_{h}h", _lag("total_demand", h)) for h in (24, 48, 72)]
    f += [(f"all_city_demand_roll_mean_{hours}h", _window("AVG", "total_demand", hours)) for hours in (24, 168)]
    f += [(f"city_share_lag_{h}h", _ratio(_lag("demand_obs", h), _lag("total_demand", h))) for h in (24, 48)]
    f += [
        (
            f"city_share_roll_{hours}h",
            _ratio(_window("SUM", "demand_obs", hours), _window("SUM", "total_demand", hours)),
        )
        for hours in (24, 168)
    ]
    return f


def _day_flag_sql(day_expr: str) -> str:
    """1 when the local day number ``day_expr`` is a Saturday, a Sunday or a holiday."""
    return _flag(f"(({day_expr}) + 3) % 7 >= 5 OR ({day_expr}) IN ({_holiday_days()})")


_HOLIDAY_DAYS = "__HOLIDAY_DAYS__"  # replaced when rendering: the holidays near the frame, as day numbers


def _holiday_days() -> str:
    return _HOLIDAY_DAYS


def holiday_day_numbers(first_hour: int, last_hour: int) -> list[int]:
    """Day numbers (days since 1970-01-01) of the holidays around hours ``first_hour .. last_hour``."""
    first, last = first_hour // 24 - 9, last_hour // 24 + 2  # local days reach back 7 days and ahead 1
    return [n for n in ((day - _EPOCH).days for day in HOLIDAYS) if first <= n <= last]


def _last_same_daytype() -> str:
    """The same local hour on the most recent of the past 7 days of the row's day type."""
    return "CASE " + " ".join(f"WHEN _offday_{k} = _offday_0 THEN demand_lag_{24 * k}h" for k in range(1, 8)) + " END"


def _matched_lag_168h() -> str:
    """Same hour last week, unless last week's day was of another day type (a holiday on either side)."""
    return f"CASE WHEN _offday_7 = _offday_0 THEN demand_lag_168h ELSE {_last_same_daytype()} END"


def _daytype_features() -> list[tuple[str, str]]:
    """Day-type-aware baselines (second level, over ``level1``).

    The same local hour on the most recent days of the row's day type (work day vs. weekend or
    holiday). They carry over to holidays, which a few weeks of training rows rarely contain: a
    holiday row gets weekend-shaped baselines. On ordinary days they equal plain lags, so they come
    first in the column order: LightGBM breaks ties between equally good splits by column order.
    """
    same_type = [f"CASE WHEN _offday_{k} = _offday_0 THEN 1 ELSE 0 END" for k in range(1, 8)]
    n_same = "(" + " + ".join(same_type) + ")"
    mean_same = _ratio(
        "(" + " + ".join(f"{w} * demand_lag_{24 * k}h" for k, w in enumerate(same_type, 1)) + ")", n_same
    )
    last_same = _last_same_daytype()
    level = _ratio("demand_roll_mean_24h", "demand_roll_mean_168h")
    return [
        ("daytype_matched_lag_168h", _matched_lag_168h()),
        ("same_daytype_last", last_same),
        ("same_daytype_mean_7d", mean_same),
        ("same_daytype_level_adjusted", f"{mean_same} * {level}"),
        ("same_daytype_days_7d", n_same),
        ("ratio_same_daytype_to_same_hour_7d", _ratio(mean_same, _same_hour_mean(7))),
    ]


def _same_hour_mean(days: int) -> str:
    return "(" + " + ".join(f"demand_lag_{24 * k}h" for k in range(1, days + 1)) + f") / {days}"


def _calendar_features() -> list[tuple[str, str]]:
    """Local calendar (holiday-aware ones first, for the same tie-breaking reason)."""
    return [
        ("local_hour", "local_hour"),
        ("is_offday", "_offday_0"),
        ("day_type_hour", "_offday_0 * 24 + local_hour"),
        # The small hours after a Friday, a Saturday or a holiday eve.
        ("is_night_after_going_out", _flag("local_hour < 5 AND ((dow + 6) % 7 IN (4, 5) OR _holiday_0 = 1)")),
        ("is_holiday", "_holiday_0"),
        ("prev_day_offday", "_offday_1"),
        ("next_day_offday", "_offday_next"),
        ("is_holiday_eve", "_holiday_next"),
        ("utc_hour", "hour_idx % 24"),
        ("day_of_week", "dow"),
        ("is_weekend", _flag("dow >= 5")),
        ("is_monday", _flag("dow = 0")),
        ("is_friday", _flag("dow = 4")),
        ("is_saturday", _flag("dow = 5")),
        ("is_sunday", _flag("dow = 6")),
        ("dow_hour", "dow * 24 + local_hour"),
        ("hour_sin", "SIN(2 * PI() * local_hour / 24)"),
        ("hour_cos", "COS(2 * PI() * local_hour / 24)"),
        ("dow_sin", "SIN(2 * PI() * dow / 7)"),
        ("dow_cos", "COS(2 * PI() * dow / 7)"),
        ("year_sin", "SIN(2 * PI() * local_day / CAST(365.2425 AS DOUBLE))"),
        ("year_cos", "COS(2 * PI() * local_day / CAST(365.2425 AS DOUBLE))"),
        ("day_number", "local_day"),
    ]


def _derived_features() -> list[tuple[str, str]]:
    """Second level: combinations of first-level features (over ``level1``)."""
    same_hour = [f"demand_lag_{24 * k}h" for k in range(1, 8)]
    f: list[tuple[str, str]] = [(f"same_hour_mean_{k}d", _same_hour_mean(k)) for k in range(2, 8)]
    f.append(("same_hour_min_7d", "LEAST(" + ", ".join(same_hour) + ")"))
    f.append(("same_hour_max_7d", "GREATEST(" + ", ".join(same_hour) + ")"))
    mean7 = _same_hour_mean(7)
    mean_sq7 = "(" + " + ".join(f"{c} * {c}" for c in same_hour) + ") / 7"
    f.append(("same_hour_std_7d", f"SQRT(GREATEST({mean_sq7} - ({mean7}) * ({mean7}), 0))"))
    weekly = _matched_lag_168h()
    f += [
        ("ratio_lag_24h_to_matched_168h", _ratio("demand_lag_24h", weekly)),
        ("ratio_lag_24h_to_48h", _ratio("demand_lag_24h", "demand_lag_48h")),
        ("ratio_matched_168h_to_roll_mean_168h", _ratio(weekly, "demand_roll_mean_168h")),
        ("ratio_roll_mean_24h_to_168h", _ratio("demand_roll_mean_24h", "demand_roll_mean_168h")),
        ("ratio_same_hour_7d_to_roll_mean_168h", _ratio(mean7, "demand_roll_mean_168h")),
        ("ratio_lag_24h_to_same_hour_7d", _ratio("demand_lag_24h", mean7)),
        ("ratio_matched_168h_to_same_hour_7d", _ratio(weekly, mean7)),
        ("ratio_roll_max_24h_to_mean_24h", _ratio("demand_roll_max_24h", "demand_roll_mean_24h")),
        ("diff_lag_24h_48h", "demand_lag_24h - demand_lag_48h"),
        ("diff_lag_24h_matched_168h", f"demand_lag_24h - {weekly}"),
        ("diff_lag_24h_25h", "demand_lag_24h - demand_lag_25h"),
        ("level_adjusted_matched_168h", f"{weekly} * {_ratio('demand_roll_mean_24h', 'demand_roll_mean_168h')}"),
    ]
    return f


# Helper columns (not features themselves): local day types of the row's day, the next day and
# the 7 days before; 1970-01-01 was a Thursday, so Monday = 0 in ``(day + 3) % 7``.
CALENDAR_COLUMNS: list[tuple[str, str]] = (
    [(f"_offday_{k}", _day_flag_sql(f"local_day - {k}")) for k in range(8)]
    + [("_offday_next", _day_flag_sql("local_day + 1"))]
    + [("_holiday_0", _flag(f"local_day IN ({_holiday_days()})"))]
    + [("_holiday_next", _flag(f"local_day + 1 IN ({_holiday_days()})"))]
)
WINDOW_FEATURES = _window_features()
DERIVED_FEATURES = _daytype_features() + _calendar_features() + _derived_features()
# Output column order: holiday-aware baselines and calendar first (see ``_daytype_features``).
FEATURE_NAMES: list[str] = (
    [name for name, _ in _daytype_features() + _calendar_features()]
    + [name for name, _ in WINDOW_FEATURES]
    + [name for name, _ in _derived_features()]
)
assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES)), "duplicate feature names"


def _utc_offset_sql(city_column: str) -> str:
    whens = " ".join(f"WHEN '{city}' THEN {offset}" for city, offset in sorted(CITY_UTC_OFFSET_HOURS.items()))
    return f"CASE {city_column} {whens} ELSE 0 END"


# The city-hour aggregates of ``rides``: computed once per day (``city_hour_aggregates``), they are
# all the features read, so a features partition never re-reads raw events.
HOURLY_SQL = """
SELECT
  city,
  hour_idx,
  COUNT(*) AS rides,
  SUM(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END) AS cancelled,
  SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END) AS completed,
  SUM(CASE WHEN status = 'completed' THEN fare_usd ELSE 0 END) AS fare_sum,
  SUM(CASE WHEN status = 'completed' THEN distance_km ELSE 0 END) AS distance_sum,
  AVG(temperature_c) AS temperature,
  AVG(precipitation_mm) AS precipitation
FROM rides
GROUP BY city, hour_idx
ORDER BY city, hour_idx
"""
HOURLY_KEY = ("city", "hour_idx")
HOURLY_VALUES = ("rides", "cancelled", "completed", "fare_sum", "distance_sum", "temperature", "precipitation")


def feature_sql(frame_start_hour: int, label_end_hour: int, frame_end_hour: int) -> str:
    """One SELECT producing ``city, hour_idx, demand`` and every feature for hours in the frame.

    It reads ``hourly`` (the ``HOURLY_SQL`` aggregates of the window's days) and ``hour_grid``.
    ``demand`` is the number of rides requested in the city-hour for rows up to
    ``label_end_hour`` and NULL after it (the scoring rows).
    """
    window_cols = ",\n    ".join(f"{expr} AS {name}" for name, expr in WINDOW_FEATURES)
    outputs = {name: f"CAST({name} AS DOUBLE) AS {name}" for name, _ in WINDOW_FEATURES}
    outputs.update({name: f"CAST({expr} AS DOUBLE) AS {name}" for name, expr in DERIVED_FEATURES})
    feature_cols = ",\n    ".join(outputs[name] for name in FEATURE_NAMES)
    calendar_cols = ",\n    ".join(f"{expr} AS {name}" for name, expr in CALENDAR_COLUMNS)
    calendar_names = ", ".join(name for name, _ in CALENDAR_COLUMNS)
    holidays = holiday_day_numbers(frame_start_hour, frame_end_hour)
    sql = f"""
WITH series AS (
  SELECT
    g.city,
    g.hour_idx,
    g.hour_idx + {_utc_offset_sql("g.city")} AS local_idx,
    CAST(COALESCE(h.rides, 0) AS DOUBLE) AS demand_obs,
    CAST(COALESCE(h.cancelled, 0) AS DOUBLE) AS cancelled,
    CAST(COALESCE(h.completed, 0) AS DOUBLE) AS completed,
    CAST(COALESCE(h.fare_sum, 0) AS DOUBLE) AS fare_sum,
    CAST(COALESCE(h.distance_sum, 0) AS DOUBLE) AS distance_sum,
    CAST(h.temperature AS DOUBLE) AS temperature,
    CAST(h.precipitation AS DOUBLE) AS precipitation,
    SUM(CAST(COALESCE(h.rides, 0) AS DOUBLE)) OVER (PARTITION BY g.hour_idx) AS total_demand
  FROM hour_grid g
  LEFT JOIN hourly h ON g.city = h.city AND g.hour_idx = h.hour_idx
),
calendar AS (
  SELECT
    *,
    CAST(FLOOR(local_idx / 24) AS BIGINT) AS local_day,
    local_idx % 24 AS local_hour
  FROM series
),
daytypes AS (
  SELECT
    *,
    (local_day + 3) % 7 AS dow,
    {calendar_cols}
  FROM calendar
),
level1 AS (
  SELECT
    city,
    hour_idx,
    local_day,
    local_hour,
    dow,
    {calendar_names},
    demand_obs,
    {window_cols}
  FROM daytypes
)
SELECT
    city,
    hour_idx,
    CASE WHEN hour_idx <= {int(label_end_hour)} THEN demand_obs END AS {LABEL},
    {feature_cols}
FROM level1
WHERE hour_idx BETWEEN {int(frame_start_hour)} AND {int(frame_end_hour)}
ORDER BY city, hour_idx
"""
    return sql.replace(_HOLIDAY_DAYS, ", ".join(map(str, holidays)) if holidays else "-1")
