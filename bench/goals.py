"""The goals of the recorded figures, in one place: BENCHMARKS.md "Seed scale" and issue 27's Spark engines.

A ``Goal`` names a JSON figure line (``{"bench": ...}``, optionally only lines whose other fields
match ``where``), the field it judges, and the bound; a ``Ratio`` judges one figure over another
(once both lines have been seen). ``verdicts`` and ``ratio_verdicts`` say met / not met for each.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterable, Mapping
from typing import Any

from mltrain_assets.pipelines.recsys.contract import AUC_THRESHOLD

OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq}


@dataclasses.dataclass(frozen=True)
class Goal:
    figure: str  # the row of BENCHMARKS.md
    bench: str
    field: str
    op: str
    target: float | bool
    unit: str = ""
    where: Mapping[str, tuple[Any, ...]] = dataclasses.field(default_factory=dict)

    def matches(self, line: Mapping[str, Any]) -> bool:
        return line.get("bench") == self.bench and all(line.get(k) in v for k, v in self.where.items())


@dataclasses.dataclass(frozen=True)
class Ratio:
    figure: str
    numerator: Goal  # its bench / field / where pick the line and value; its bound is unused
    denominator: Goal
    op: str
    target: float


def _pick(bench: str, field: str, **where: Any) -> Goal:
    return Goal("", bench, field, "==", 0, where={k: (v,) for k, v in where.items()})


CONNECT_ENGINES = ("spark_connect", "spark_connect_warm")
GOALS: tuple[Goal, ...] = (
    Goal(
        "seed day ingest (validate, dedupe, commit): peak RSS",
        "seed_demand_ride_events",
        "peak_rss_mb",
        "<=",
        4096,
        " MB",
    ),
    Goal(
        "landing -> committed features, DuckDB",
        "seed_demand_landing_to_features",
        "runs_s",
        "<=",
        180,
        " s",
        {"engine": ("duckdb",)},
    ),
    Goal("features for one date from 35 days of aggregates", "seed_demand_features", "wall_s", "<=", 5, " s"),
    Goal("city model at the seed day staged", "seed_demand_city_model", "staged", "==", True),
    Goal("ALS over 20M interactions, Spark local[2]", "seed_recsys_als", "seconds", "<=", 600, " s"),
    Goal("recommender AUC at seed scale above the gate", "seed_recsys_train", "auc", ">", AUC_THRESHOLD),
    Goal(
        "simulator's oracle AUC on the held-out day above the gate",
        "seed_recsys_oracle",
        "oracle_auc",
        ">",
        AUC_THRESHOLD,
    ),
    Goal("control-plane RSS 10x / 1x", "control_plane_memory_ratio", "control_plane_rss_ratio", "<=", 1.1),
    Goal("definitions import", "import_definitions", "median_s", "<=", 1.0, " s"),
    Goal(
        "UI launch -> success, committed partition", "ui_launch_committed_median", "launch_to_success_s", "<=", 8, " s"
    ),
    Goal(
        "features for one date, Spark Connect warm (second query)",
        "spark_engines_features_one_date",
        "seconds",
        "<=",
        5,
        " s",
        {"engine": ("spark_connect_warm",)},
    ),
    Goal(
        "features for one date, Spark Connect step on a warm server (workload process)",
        "spark_engines_features_one_date",
        "seconds",
        "<=",
        5,
        " s",
        {"engine": ("spark_connect",), "mode": ("workload_process",)},
    ),
    Goal(
        "35-day backfill of features on Spark",
        "spark_engines_features_range",
        "seconds",
        "<=",
        120,
        " s",
        {"engine": ("spark_classic", *CONNECT_ENGINES)},
    ),
)
RATIOS: tuple[Ratio, ...] = (
    Ratio(
        "aggregates of the seed day, Spark / DuckDB",
        _pick("seed_demand_city_hour_aggregates", "wall_s", engine="spark"),
        _pick("seed_demand_city_hour_aggregates", "wall_s", engine="duckdb"),
        "<=",
        8,
    ),
    Ratio(
        "features for one date, Spark Connect warm / DuckDB (in process)",
        _pick("spark_engines_features_one_date", "seconds", engine="spark_connect_warm"),
        _pick("spark_engines_features_one_date", "seconds", engine="duckdb", mode="in_process"),
        "<=",
        3,
    ),
    Ratio(
        "features for one date, Spark Connect step / DuckDB step (workload processes)",
        _pick("spark_engines_features_one_date", "seconds", engine="spark_connect", mode="workload_process"),
        _pick("spark_engines_features_one_date", "seconds", engine="duckdb", mode="workload_process"),
        "<=",
        3,
    ),
)


@dataclasses.dataclass(frozen=True)
class Verdict:
    figure: str
    value: Any
    op: str
    target: Any
    unit: str
    met: bool
    under_load: str = ""

    def line(self) -> str:
        value = f"{self.value:.2f}" if isinstance(self.value, float) else str(self.value)
        said = f"{self.figure}: {value}{self.unit} (goal {self.op} {self.target}{self.unit}) -> "
        return said + ("met" if self.met else "NOT met") + (f"  [{self.under_load}]" if self.under_load else "")


def _judge(op: str, value: Any, target: Any) -> bool:
    try:
        return bool(OPS[op](value, target))
    except TypeError:
        return False  # a missing or non-numeric value meets nothing


def _label(goal: Goal, line: Mapping[str, Any]) -> str:
    qualifiers = [str(line[k]) for k in ("engine", "city") if k in line]
    return goal.figure + (f" ({', '.join(qualifiers)})" if qualifiers else "")


def verdicts(line: Mapping[str, Any]) -> list[Verdict]:
    """The verdicts of the goals this figure line answers (none for a figure without a goal)."""
    under_load = line.get("load", {}).get("under_load", "")
    return [
        Verdict(
            _label(g, line),
            line.get(g.field),
            g.op,
            g.target,
            g.unit,
            _judge(g.op, line.get(g.field), g.target),
            under_load,
        )
        for g in GOALS
        if g.matches(line)
    ]


def ratio_verdicts(lines: Iterable[Mapping[str, Any]]) -> list[Verdict]:
    """The ratios whose two figures are both among ``lines`` (the last of each)."""
    seen = list(lines)
    out = []
    for ratio in RATIOS:
        top = [line for line in seen if ratio.numerator.matches(line)]
        bottom = [line for line in seen if ratio.denominator.matches(line)]
        if not (top and bottom):
            continue
        a, b = top[-1].get(ratio.numerator.field), bottom[-1].get(ratio.denominator.field)
        value = round(a / b, 2) if isinstance(a, int | float) and isinstance(b, int | float) and b else None
        under = next(
            (x["load"]["under_load"] for x in (top[-1], bottom[-1]) if x.get("load", {}).get("under_load")), ""
        )
        out.append(
            Verdict(ratio.figure, value, ratio.op, ratio.target, "x", _judge(ratio.op, value, ratio.target), under)
        )
    return out
