"""Partitions shared by both pipelines: UTC days, and days x cities for per-city models."""

import os

from dagster import DailyPartitionsDefinition, MultiPartitionKey, MultiPartitionsDefinition, StaticPartitionsDefinition

from mltrain_assets.schemas import CITIES

PARTITIONS_START_DATE = "2025-01-01"


def configured_cities() -> list[str]:
    """The metros this deployment models: ``MLTRAIN_CITIES`` (comma-separated), default all eight."""
    cities = [c.strip() for c in os.environ.get("MLTRAIN_CITIES", ",".join(CITIES)).split(",") if c.strip()]
    unknown = sorted(set(cities) - set(CITIES))
    if unknown or not cities:
        raise ValueError(
            f"MLTRAIN_CITIES={os.environ.get('MLTRAIN_CITIES')!r}: unknown cities {unknown}; known: {CITIES}"
        )
    return cities


daily_partitions = DailyPartitionsDefinition(start_date=PARTITIONS_START_DATE, timezone="UTC")
city_partitions = StaticPartitionsDefinition(configured_cities())
daily_city_partitions = MultiPartitionsDefinition({"date": daily_partitions, "city": city_partitions})


def partition_path(partition_key: str | MultiPartitionKey) -> str:
    """The storage path segment for a partition: ``2026-11-27``, or ``nyc/2026-11-27`` for date x city.

    Dimensions are ordered by name, the layout Dagster's ``UPathIOManager`` uses for the refs too.
    """
    if isinstance(partition_key, MultiPartitionKey):
        return "/".join(key for _, key in sorted(partition_key.keys_by_dimension.items()))
    return str(partition_key)


def city_partition_key(date: str, city: str) -> MultiPartitionKey:
    return MultiPartitionKey({"date": date, "city": city})
