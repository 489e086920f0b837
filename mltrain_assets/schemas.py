"""The landing datasets' schemas and value rules, written down once.

The simulator writes them, ingestion validates against them, the README
documents them (``mltrain schema`` prints them).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

UTC_TS = pa.timestamp("us", tz="UTC")

CITIES = ("nyc", "sf", "chicago", "la", "seattle", "austin", "boston", "miami")

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

INTERACTIONS_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),  # unique per impression
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("event_at", UTC_TS, nullable=False),  # impression time; defines the hour bucket
        pa.field("device", pa.string(), nullable=False),  # 'ios' | 'android' | 'web'
        pa.field("position", pa.int32(), nullable=False),  # slot in the shown list, 0-based
        pa.field("clicked", pa.int8(), nullable=False),  # label: 1 engaged, 0 not
        pa.field("dwell_seconds", pa.float64(), nullable=False),  # 0 when not clicked
    ]
)


@dataclass(frozen=True)
class DatasetSpec:
    """One landing dataset: its schema, its unique key, its event-time column and value rules."""

    name: str
    schema: pa.Schema
    id_column: str
    time_column: str
    # SQL predicates (DuckDB dialect) a valid row satisfies, by rule name.
    row_rules: dict[str, str]
    min_rows_per_day: int


DATASETS = {
    "rides": DatasetSpec(
        name="rides",
        schema=RIDES_SCHEMA,
        id_column="ride_id",
        time_column="requested_at",
        row_rules={
            "ride_id_present": "ride_id IS NOT NULL AND length(ride_id) > 0",
            "known_city": "city IN (" + ", ".join(f"'{c}'" for c in CITIES) + ")",
            "valid_status": "status IN ('completed', 'cancelled')",
            "non_negative_fare": "fare_usd >= 0",
            "non_negative_distance": "distance_km >= 0",
            "non_negative_precipitation": "precipitation_mm >= 0",
            "dropoff_after_pickup": "dropoff_at IS NULL OR pickup_at IS NULL OR dropoff_at >= pickup_at",
        },
        min_rows_per_day=1_000,
    ),
    "interactions": DatasetSpec(
        name="interactions",
        schema=INTERACTIONS_SCHEMA,
        id_column="event_id",
        time_column="event_at",
        row_rules={
            "event_id_present": "event_id IS NOT NULL AND length(event_id) > 0",
            "valid_label": "clicked IN (0, 1)",
            "known_device": "device IN ('ios', 'android', 'web')",
            "non_negative_position": "position >= 0",
            "non_negative_dwell": "dwell_seconds >= 0",
        },
        min_rows_per_day=1_000,
    ),
}
