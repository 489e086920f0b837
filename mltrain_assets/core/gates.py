"""Gates: the one mechanism that decides whether a partition may be built on.

A ``Gate`` is a named rule over the summary a workload committed for one partition. The
step that produces a partition evaluates its gates (``core.steps``): each gate becomes a
blocking check result of that partition (the checks are partitioned like their asset) and its
violations are recorded in the partition's reference.
The reference IO manager refuses to hand a gated reference to any downstream asset, so no
asset body can forget the check. Every outcome names the partition and the observed value,
passing or failing: a violation names the asset, partition, rule and value
(``city_demand_model nyc|2026-11-27: rule mape < 0.15: observed mape=0.21``), a pass the
partition and what was measured (``nyc|2026-11-27: MAPE 0.129 < 0.15``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mltrain_assets.workloads.ingest.rules import HOURS_PER_DAY, completeness_violations, missing_hours


@dataclass
class GateOutcome:
    """One gate over one or more partitions: the violations that failed it, and what each partition showed.

    ``observed`` maps partition -> its observed values, ``partition`` first (it becomes the check
    result's metadata); ``findings`` maps partition -> one line naming the partition and its values;
    ``violations_by_partition`` maps partition -> its own violations (each partition's check result).
    """

    name: str
    violations: list[str] = field(default_factory=list)
    observed: dict[str, Any] = field(default_factory=dict)
    findings: dict[str, str] = field(default_factory=dict)
    violations_by_partition: dict[str, list[str]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.violations

    def for_partition(self, partition: str) -> GateOutcome:
        """This gate's outcome on one of its partitions alone: what that partition's check result says."""
        return GateOutcome(
            self.name,
            violations=list(self.violations_by_partition.get(partition, [])),
            observed={partition: self.observed[partition]},
            findings={partition: self.findings[partition]},
            violations_by_partition={partition: list(self.violations_by_partition.get(partition, []))},
        )

    def describe(self) -> str:
        """What the check result says: the violations if any, else each partition with its observed values."""
        if not self.passed:
            return "; ".join(self.violations)
        return "; ".join(self.findings[p] for p in sorted(self.findings)) or "passed (no partitions)"


# (asset, partition, committed summary) -> (violations, observed values) for that partition
GateRule = Callable[[str, str, Mapping[str, Any]], tuple[list[str], dict[str, Any]]]
# observed values of one partition -> what they show, e.g. "MAPE 0.129 < 0.15"
GateFinding = Callable[[Mapping[str, Any]], str]


def _no_finding(observed: Mapping[str, Any]) -> str:
    shown = ", ".join(f"{k} {_fmt(v)}" for k, v in observed.items() if isinstance(v, (int, float, str)))
    return shown or "passed"


@dataclass(frozen=True)
class Measure:
    """What a metric gate measures: the report reads its metric, threshold and direction from here."""

    metric: str
    threshold: float
    below: bool  # the metric must be below the threshold (lower is better)
    context: tuple[str, ...] = ()  # other summary values shown beside it, a naive baseline first


@dataclass(frozen=True)
class Gate:
    """A blocking check that a producing step evaluates on each partition it commits."""

    name: str
    description: str
    rule: GateRule
    finding: GateFinding = _no_finding
    measure: Measure | None = None  # set for metric gates (``metric_below``/``metric_above``)

    def evaluate(self, asset: str, summaries: Mapping[str, Mapping[str, Any]]) -> GateOutcome:
        """The outcome over one or more partitions (``{partition: summary}``)."""
        outcome = GateOutcome(self.name)
        for partition, summary in sorted(summaries.items()):
            violations, observed = self.rule(asset, partition, summary)
            outcome.violations.extend(violations)
            outcome.violations_by_partition[partition] = list(violations)
            outcome.observed[partition] = {"partition": partition, **observed}
            outcome.findings[partition] = f"{partition}: {self.finding(observed)}"
        return outcome


def _fmt(value: Any) -> str:
    """A number as a person reads it: 102,345 rows; 0.129; None stays None."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


# ------------------------------------------------------------------ data gates (ingestion)


def landed_complete(min_rows_per_day: int) -> Gate:
    """All 24 hourly buckets arrived, each with a plausible count, and the day has enough rows.

    Ingestion rejects a day breaking this rule before committing it (the same
    ``completeness_violations``), so a committed day passes; the gate shows what was measured.
    """

    def rule(asset: str, partition: str, summary: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
        rows_by_hour = {int(h): int(n) for h, n in (summary.get("rows_by_hour") or {}).items()}
        rows = int(summary.get("rows", 0))
        violations = [
            f"{asset} {partition}: rule {name}: {detail}"
            for name, detail in completeness_violations(rows_by_hour, rows, min_rows_per_day)
        ]
        hours_present = HOURS_PER_DAY - len(missing_hours(rows_by_hour))
        return violations, {"rows": rows, "hours_present": hours_present, "min_rows": min_rows_per_day}

    def finding(observed: Mapping[str, Any]) -> str:
        sign = ">=" if observed["rows"] >= observed["min_rows"] else "<"
        return (
            f"{observed['hours_present']}/{HOURS_PER_DAY} hourly buckets, "
            f"{_fmt(observed['rows'])} rows {sign} {_fmt(observed['min_rows'])}"
        )

    return Gate(
        "landed_complete",
        "All 24 hourly buckets arrived with plausible counts, and the day has enough rows.",
        rule,
        finding,
    )


def _matches_contract(asset: str, partition: str, summary: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    violations = []
    if not summary.get("schema_ok", False):
        violations.append(f"{asset} {partition}: rule schema: landed files do not match the schema")
    return violations, {
        "rows_rejected": int(summary.get("rows_rejected", 0)),
        "rejected_by_rule": summary.get("rejected_by_rule") or {},
        "duplicates_removed": int(summary.get("duplicates_removed", 0)),
    }


def _contract_finding(observed: Mapping[str, Any]) -> str:
    by_rule = ", ".join(f"{rule}={n:,}" for rule, n in sorted(observed["rejected_by_rule"].items()) if n)
    return (
        f"schema ok, {_fmt(observed['rows_rejected'])} rows quarantined{f' ({by_rule})' if by_rule else ''}, "
        f"{_fmt(observed['duplicates_removed'])} duplicates removed"
    )


MATCHES_CONTRACT = Gate(
    "matches_contract",
    "Landed files match the schema; rows breaking value rules were quarantined (<= 1%).",
    _matches_contract,
    _contract_finding,
)


# ------------------------------------------------------------------ metric gates (models)


def metric_below(
    check_name: str, metric: str, threshold: float, description: str = "", context: tuple[str, ...] = ()
) -> Gate:
    """The committed ``metric`` must be strictly below ``threshold`` (a missing value fails).

    ``context`` names other summary values shown beside it (e.g. a naive baseline); a pass names
    the metric in capitals (``MAPE 0.129 < 0.15``).
    """
    return _metric_gate(check_name, metric, threshold, description, context, below=True)


def metric_above(
    check_name: str, metric: str, threshold: float, description: str = "", context: tuple[str, ...] = ()
) -> Gate:
    """The committed ``metric`` must be strictly above ``threshold`` (a missing value fails)."""
    return _metric_gate(check_name, metric, threshold, description, context, below=False)


def _metric_gate(
    check_name: str, metric: str, threshold: float, description: str, context: tuple[str, ...], *, below: bool
) -> Gate:
    sign = "<" if below else ">"
    shown_as = metric.upper()

    def rule(asset: str, partition: str, summary: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
        value = summary.get(metric)
        passed = value is not None and (value < threshold if below else value > threshold)
        violations = (
            [] if passed else [f"{asset} {partition}: rule {metric} {sign} {threshold}: observed {metric}={value}"]
        )
        return violations, {metric: value, **{k: summary.get(k) for k in context}, "threshold": threshold}

    def finding(observed: Mapping[str, Any]) -> str:
        beside = ", ".join(f"{k} {_fmt(observed.get(k))}" for k in context)
        return f"{shown_as} {_fmt(observed.get(metric))} {sign} {_fmt(threshold)}" + (f" ({beside})" if beside else "")

    description = description or f"Held-out {shown_as} {sign} {threshold}; a failure blocks registration."
    return Gate(check_name, description, rule, finding, Measure(metric, threshold, below, context))


# ------------------------------------------------------------------ engine parity (SQL outputs)


def _engine_parity(asset: str, partition: str, summary: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    report = summary.get("engine_parity") or {}
    if not report.get("checked"):
        return [], {"checked": False, "reason": report.get("reason", "not checked")}
    engines = " vs ".join(report["engines"])
    observed = {
        "checked": True,
        "engines": engines,
        "cells_compared": int(report["cells_compared"]),
        "cells_differing": int(report["cells_differing"]),
        "max_relative_diff": float(report["max_relative_diff"]),
        "tolerance": float(report["tolerance"]),
    }
    violations = []
    if report["cells_differing"] or not report["cells_compared"]:
        shown = "; ".join(
            f"{m.get('column')} at " + ", ".join(f"{k}={v}" for k, v in m.items() if k != "column")
            for m in report.get("mismatches", [])
        )
        violations.append(
            f"{asset} {partition}: rule engine_parity: {engines} differ on {report['cells_differing']:,} of "
            f"{report['cells_compared']:,} cells beyond {report['tolerance']:g} (max relative difference "
            f"{report['max_relative_diff']:.3g}){f': {shown}' if shown else ''}"
        )
    return violations, observed


def _parity_finding(observed: Mapping[str, Any]) -> str:
    if not observed.get("checked"):
        return f"not checked ({observed.get('reason')})"
    return (
        f"{observed['engines']}: {_fmt(observed['cells_compared'])} cells, max relative difference "
        f"{observed['max_relative_diff']:.1e} <= {observed['tolerance']:g}"
    )


ENGINE_PARITY = Gate(
    "engine_parity",
    "The same SQL recomputed on the other engine (Spark vs DuckDB) gives the same numbers, cell by cell, "
    "within 1e-9 (relative; absolute below 1): engine drift or a dialect slip never reaches training.",
    _engine_parity,
    _parity_finding,
)
