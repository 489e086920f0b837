"""How a landing dataset is described: its schema, key, event time and value rules.

Each pipeline's spec (``registry.PipelineSpec.landing_datasets``) declares the datasets it lands; the simulator
writes them, ingestion validates against them, ``mltrain schema`` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

UTC_TS = pa.timestamp("us", tz="UTC")


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
    # Repeats of an id (redelivered events) are dropped, keeping the first; a day in which more than
    # this share of the landed rows repeat an id is rejected (rule ``duplicate_keys``): a producer replayed it.
    max_duplicate_fraction: float = 0.05
    # Columns whose row count per value the ingested day records, as ``rows_by_<column>`` (e.g. rows by city).
    count_by: tuple[str, ...] = ()
