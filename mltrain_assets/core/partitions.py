"""Partitions every pipeline shares: UTC days, and trailing windows of them as asset inputs."""

import datetime as dt
import os

from dagster import (
    AssetIn,
    DailyPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    TimeWindowPartitionMapping,
)

from mltrain_assets.registry import KeySetting, configured_keys
from mltrain_assets.resources.storage import WINDOW_INPUT
from mltrain_assets.workloads.common.dates import Window

# The first daily partition of every asset. A fixed date, not "N days ago": the partitions (and
# the run and backfill history keyed by them) must not move from one day to the next. A fresh
# install shows the days since then; set MLTRAIN_PARTITIONS_START to reach further back (history
# to backfill) or to start later. Every process of a deployment (webserver, daemon, code server,
# run workers) must see the same value.
PARTITIONS_START_ENV = "MLTRAIN_PARTITIONS_START"
DEFAULT_PARTITIONS_START = "2026-01-01"


def partitions_start_date() -> str:
    """``$MLTRAIN_PARTITIONS_START`` (``YYYY-MM-DD``), else ``DEFAULT_PARTITIONS_START``."""
    value = os.environ.get(PARTITIONS_START_ENV, "").strip() or DEFAULT_PARTITIONS_START
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError(f"{PARTITIONS_START_ENV}={value!r} is not a date (YYYY-MM-DD)") from None


PARTITIONS_START_DATE = partitions_start_date()


def require_partitions_from(first_date: str, what: str) -> None:
    """Refuse, naming the setting, work that needs days before the first partition (a trailing window's start)."""
    if first_date < PARTITIONS_START_DATE:
        raise ValueError(
            f"{what} needs days from {first_date}, before the first partition {PARTITIONS_START_DATE} "
            f"({PARTITIONS_START_ENV}): pick a later date, or set {PARTITIONS_START_ENV}={first_date} (or earlier) "
            "for every process that loads the code location"
        )


daily_partitions = DailyPartitionsDefinition(start_date=PARTITIONS_START_DATE, timezone="UTC")


def window_input(window: Window) -> AssetIn:
    """An asset input over a trailing window of an upstream's daily partitions, from the pipeline contract."""
    return AssetIn(
        partition_mapping=TimeWindowPartitionMapping(start_offset=window.start_offset, end_offset=window.end_offset),
        # Missing days are reported by the IO manager, all at once and by date, instead of one at a time.
        metadata={"allow_missing_partitions": True, WINDOW_INPUT: True},
    )


def same_days_input() -> AssetIn:
    """An upstream's partitions for the very days being built, always as ``{date: ref}`` (one day, or a range run's)."""
    return window_input(Window(days=1))


def partition_date(partition_key) -> str:
    """The date of a daily or date x something partition key."""
    if isinstance(partition_key, MultiPartitionKey):
        return partition_key.keys_by_dimension["date"]
    return str(partition_key)


def keyed_partitions(keys: KeySetting) -> MultiPartitionsDefinition:
    """Days x the keys this deployment configures (``keys.env``, read as the code location loads)."""
    return MultiPartitionsDefinition(
        {"date": daily_partitions, keys.what: StaticPartitionsDefinition(configured_keys(keys))}
    )
