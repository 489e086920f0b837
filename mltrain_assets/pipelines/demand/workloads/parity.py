"""Engine parity: the same SQL recomputed on the other engine must give the same numbers.

The demand SQL runs unchanged on Spark and DuckDB. A workload that commits SQL output
(``city_hour_aggregates``, ``city_demand_features``) recomputes a deterministic sample of it
on the other engine and records the comparison in its summary (``engine_parity``); the
control plane's blocking gate ``engine_parity`` fails on any cell that differs beyond
``PARITY_TOLERANCE``, so engine drift or a dialect slip never reaches training.

A cell matches when both are NULL or ``|a - b| <= PARITY_TOLERANCE * max(1, |a|, |b|)``:
relative for large values (a sum of 260k fares differs in its last bits with the order of
addition), absolute below 1. A row present on one engine only is a mismatch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from mltrain_assets.artifacts import ArtifactWriter
from mltrain_assets.workloads.common.runtime import Reporter

PARITY_TOLERANCE = 1e-9
MISMATCHES_SHOWN = 5


def sample(population: Sequence[Any], k: int, *, salt: str) -> list[Any]:
    """``k`` members of ``population``, the same for the same ``salt`` (e.g. the partition), in order."""
    ranked = sorted(population, key=lambda item: hashlib.sha256(f"{salt}|{item}".encode()).digest())
    chosen = set(ranked[:k])
    return [item for item in population if item in chosen]


def compare(
    primary: pa.Table,
    secondary: pa.Table,
    *,
    keys: Sequence[str],
    values: Sequence[str],
    engines: tuple[str, str],
    tolerance: float = PARITY_TOLERANCE,
) -> dict[str, Any]:
    """Compare two results cell by cell on ``keys``; the report the summary carries as ``engine_parity``."""
    left = primary.select([*keys, *values]).to_pandas()
    right = secondary.select([*keys, *values]).to_pandas()
    joined = left.merge(right, on=list(keys), how="outer", suffixes=("_a", "_b"), indicator=True)
    mismatches: list[dict[str, Any]] = []
    only = joined[joined["_merge"] != "both"]
    for _, row in only.head(MISMATCHES_SHOWN).iterrows():
        side = engines[0] if row["_merge"] == "left_only" else engines[1]
        mismatches.append({**{k: _plain(row[k]) for k in keys}, "column": "(row)", "only_on": side})
    both = joined[joined["_merge"] == "both"]
    differing = len(only) * len(values)
    max_diff = 0.0
    for column in values:
        a = both[f"{column}_a"].to_numpy(dtype=float, na_value=np.nan)
        b = both[f"{column}_b"].to_numpy(dtype=float, na_value=np.nan)
        null_mismatch = np.isnan(a) != np.isnan(b)
        present = ~np.isnan(a) & ~np.isnan(b)
        diff = np.zeros(len(a))
        diff[present] = np.abs(a[present] - b[present]) / np.maximum(
            1.0, np.maximum(np.abs(a[present]), np.abs(b[present]))
        )
        if present.any():
            max_diff = max(max_diff, float(diff[present].max()))
        bad = null_mismatch | (diff > tolerance)
        differing += int(bad.sum())
        for index in np.flatnonzero(bad)[: max(0, MISMATCHES_SHOWN - len(mismatches))]:
            row = both.iloc[index]
            mismatches.append(
                {
                    **{k: _plain(row[k]) for k in keys},
                    "column": column,
                    engines[0]: _plain(a[index]),
                    engines[1]: _plain(b[index]),
                }
            )
    return {
        "checked": True,
        "engines": list(engines),
        "rows_compared": len(both),
        "cells_compared": len(both) * len(values),
        "cells_differing": differing,
        "max_relative_diff": max_diff,
        "tolerance": tolerance,
        "mismatches": mismatches,
    }


def in_words(report: dict[str, Any]) -> str:
    """A workload's log suffix for its parity report: ``; parity vs duckdb: 0 of 84 cells differ (…)``."""
    if not report.get("checked"):
        return ""
    return (
        f"; parity vs {report['engines'][1]}: {report['cells_differing']} of {report['cells_compared']} cells "
        f"differ (max relative {report['max_relative_diff']:.1e})"
    )


def commit_result(
    writer: ArtifactWriter,
    file: str,
    table: pa.Table,
    summary: dict[str, Any],
    *,
    engine: str,
    seconds: float,
    engine_parity: dict[str, Any],
    reporter: Reporter | None,
    said: str,
) -> dict[str, Any]:
    """Commit one engine's SQL result as ``file``; its summary adds the cities, the engine, its time and the parity.

    ``said``: the workload's log line for it, to which the parity report is added in words.
    """
    summary = {
        **summary,
        "cities": sorted(set(table.column("city").to_pylist())),
        "engine": engine,
        "compute_seconds": round(seconds, 2),
        "engine_parity": engine_parity,
    }
    writer.write_table(file, table)
    writer.commit(summary)
    if reporter:
        reporter.info(said + in_words(engine_parity))
    return summary


def not_checked(reason: str) -> dict[str, Any]:
    """The ``engine_parity`` entry of a workload that ran without the check (it is switched off)."""
    return {"checked": False, "reason": reason}


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
