"""Demand partitions: days x the metros this deployment models."""

import os

from dagster import MultiPartitionKey, MultiPartitionsDefinition, StaticPartitionsDefinition

from mltrain_assets.core.partitions import daily_partitions
from mltrain_assets.pipelines.demand.contract import CITIES


def configured_cities() -> list[str]:
    """The metros this deployment models: ``MLTRAIN_CITIES`` (comma-separated), default all eight."""
    cities = [c.strip() for c in os.environ.get("MLTRAIN_CITIES", ",".join(CITIES)).split(",") if c.strip()]
    unknown = sorted(set(cities) - set(CITIES))
    if unknown or not cities:
        raise ValueError(
            f"MLTRAIN_CITIES={os.environ.get('MLTRAIN_CITIES')!r}: unknown cities {unknown}; known: {CITIES}"
        )
    return cities


city_partitions = StaticPartitionsDefinition(configured_cities())
daily_city_partitions = MultiPartitionsDefinition({"date": daily_partitions, "city": city_partitions})


def city_partition_key(date: str, city: str) -> MultiPartitionKey:
    return MultiPartitionKey({"date": date, "city": city})
