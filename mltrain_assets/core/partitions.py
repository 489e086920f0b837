"""Partitions every pipeline shares: UTC days, and trailing windows of them as asset inputs."""

from dagster import AssetIn, DailyPartitionsDefinition, MultiPartitionKey, TimeWindowPartitionMapping

from mltrain_assets.workloads.common.dates import Window

PARTITIONS_START_DATE = "2025-01-01"
# Input metadata marking a trailing window: the IO manager loads it as {date: ref} and requires all of it.
WINDOW_INPUT = "mltrain/window"

daily_partitions = DailyPartitionsDefinition(start_date=PARTITIONS_START_DATE, timezone="UTC")


def window_input(window: Window) -> AssetIn:
    """An asset input over a trailing window of an upstream's daily partitions, from the pipeline contract."""
    return AssetIn(
        partition_mapping=TimeWindowPartitionMapping(start_offset=window.start_offset, end_offset=window.end_offset),
        # Missing days are reported by the IO manager, all at once and by date, instead of one at a time.
        metadata={"allow_missing_partitions": True, WINDOW_INPUT: True},
    )


def partition_path(partition_key: str | MultiPartitionKey) -> str:
    """The storage path segment for a partition: ``2026-11-27``, or ``nyc/2026-11-27`` for date x city.

    Dimensions are ordered by name, the layout Dagster's ``UPathIOManager`` uses for the refs too.
    """
    if isinstance(partition_key, MultiPartitionKey):
        return "/".join(key for _, key in sorted(partition_key.keys_by_dimension.items()))
    return str(partition_key)


def partition_date(partition_key) -> str:
    """The date of a daily or date x something partition key."""
    if isinstance(partition_key, MultiPartitionKey):
        return partition_key.keys_by_dimension["date"]
    return str(partition_key)
