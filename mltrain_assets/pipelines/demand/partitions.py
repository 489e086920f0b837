"""Demand partitions: days x the cities this deployment models (``MLTRAIN_CITIES``, parsed by the spec's key setting)."""

from dagster import MultiPartitionKey

from mltrain_assets.pipelines.demand.spec import CITY_KEYS
from mltrain_assets.sdk import configured_keys, keyed_partitions

daily_city_partitions = keyed_partitions(CITY_KEYS)


def configured_cities() -> list[str]:
    """The cities this deployment models now (``MLTRAIN_CITIES``, default all of them)."""
    return configured_keys(CITY_KEYS)


def city_partition_key(date: str, city: str) -> MultiPartitionKey:
    return MultiPartitionKey({"date": date, "city": city})
