"""Demand forecasting at seed scale: one ~50M-ride day through the real pipeline, on DuckDB and on Spark.

    .venv/bin/python bench/seed_demand.py [--rides-per-day 50000000] [--scratch DIR] [--engines duckdb,spark]

What it does (each figure one JSON line, ``{"bench": ...}``):

1. Lands the features window of ``--date``: the 34 days before it at ``--history-rides-per-day``
   (normal volume), the date itself at ``--rides-per-day`` (the seed's 50M). Setup, timed.
2. Per engine, in a fresh ``MLTRAIN_HOME`` (same landing zone), through Dagster exactly as the
   demo runs it (``mltrain_assets.cli.demo.execute``: real runs, the compute backend launching each
   workload as a process and metering it): the history in one run (ingest + aggregate), then the
   seed day's run (``ride_events`` + ``city_hour_aggregates``), ``city_demand_features`` for the
   date from 35 days of aggregates, and the 8 city model runs (train -> MAPE gate -> register ->
   forecast). Each step's wall time, CPU and peak RSS come from its materialization (what the UI
   shows); the control plane's own peak RSS is this run worker's. Engine parity is off here, so the
   engines are compared on the same SQL alone.
3. Engine parity's cost: the seed day's aggregates and the date's features recomputed by the
   workloads themselves with the check on (each engine checked by the other), metered the same way.

The rest of the window at normal volume keeps the run short, and it is also why the MAPE gate
refuses the seed date's models: one day at 500x its history is a demand shock no model predicts
(the figure records the gate's verdict). ``--history-rides-per-day`` at the seed volume stages
them, at about a minute of ingestion per extra day.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONUNBUFFERED": "1"}

# Runs in a child process per engine: it is the run worker (demo.execute runs each run in-process).
PIPELINE = r"""
import json, resource, sys, time
from mltrain_assets.settings import apply_defaults
apply_defaults()
from dagster import MultiPartitionKey
from mltrain_assets.cli import demo
from mltrain_assets.pipelines.demand.partitions import configured_cities
from mltrain_assets.workloads.common.dates import shift
from mltrain_assets.pipelines.demand.contract import FEATURES_WINDOW

engine, date = sys.argv[1], sys.argv[2]
STEP_FIGURES = ("wall_s", "cpu_s", "peak_rss_mb", "rows_in", "rows_out", "reused_committed_version")

def emit(bench, **figures):
    print(json.dumps({"bench": bench, "engine": engine, **figures}), flush=True)

def run(label, job, **kwargs):
    outcome = demo.execute(job, label, **kwargs)
    steps = {asset: {k: m.get(k) for k in STEP_FIGURES} for asset, m in outcome.materializations.items()}
    return outcome, steps

started = time.monotonic()
history, _ = run("history", "ride_events_job", partition_range=(FEATURES_WINDOW.first(date), shift(date, -1)))
assert history.success, history.error
emit("seed_demand_history", days=FEATURES_WINDOW.days - 1, run_s=round(history.seconds, 1))

seed, steps = run("seed day", "ride_events_job", partition_key=date)
assert seed.success, seed.error
for asset in ("ride_events", "city_hour_aggregates"):
    emit(f"seed_demand_{asset}", date=date, run_s=round(seed.seconds, 1), **steps[asset])
features, steps = run("features", "demand_features_job", partition_key=date)
assert features.success, features.error
emit("seed_demand_features", date=date, window_days=FEATURES_WINDOW.days, run_s=round(features.seconds, 1),
     **steps["city_demand_features"])
emit("seed_demand_landing_to_features", date=date,
     runs_s=round(seed.seconds + features.seconds, 1))

for city in configured_cities():
    model, steps = run(city, "demand_city_model_job", partition_key=MultiPartitionKey({"date": date, "city": city}))
    gate = model.checks.get("city_demand_model:mape_below_threshold")
    emit("seed_demand_city_model", city=city, run_s=round(model.seconds, 1), gate_passed=gate,
         gate=model.check_descriptions.get("city_demand_model:mape_below_threshold", ""),
         staged=demo.new_registrations([model]) == 1, **steps.get("city_demand_model", {}))
emit("seed_demand_control_plane", peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
     total_s=round(time.monotonic() - started, 1))
"""


def metered(command: list[str], env: dict[str, str], timeout_s: float = 3600) -> dict:
    """Run ``command`` as the compute backend runs a workload; its wall time, CPU and peak RSS (whole tree)."""
    from mltrain_assets.launch.supervisor import run_processes

    started = time.monotonic()
    codes, usage = run_processes([(command, env)], timeout_s=timeout_s)
    if codes[0] != 0:
        raise RuntimeError(f"{command[:3]} exited {codes[0]}")
    return {"wall_s": round(time.monotonic() - started, 1), "cpu_s": usage.cpu_s, "peak_rss_mb": usage.peak_rss_mb}


def simulate(landing: str, date: str, rides_per_day: int, history_rides_per_day: int) -> None:
    from mltrain_assets.pipelines.demand.contract import FEATURES_WINDOW
    from mltrain_assets.workloads.common.dates import shift

    mltrain = str(Path(sys.executable).with_name("mltrain"))
    started = time.monotonic()
    subprocess.run(
        [mltrain, "simulate", "--dataset", "rides", "--start", FEATURES_WINDOW.first(date), "--end", shift(date, -1),
         "--rides-per-day", str(history_rides_per_day), "--landing-uri", landing],
        env=ENV, check=True, capture_output=True,
    )  # fmt: skip
    history_s = time.monotonic() - started
    code = f"from mltrain_assets.pipelines.demand.simulate import write_rides_day; import json; s = write_rides_day({landing!r}, {date!r}, {rides_per_day}); print(json.dumps(s['rows']))"
    seed = metered([sys.executable, "-c", code], ENV)
    print(json.dumps({"bench": "seed_demand_simulate", "history_days": FEATURES_WINDOW.days - 1,
                      "history_rides_per_day": history_rides_per_day, "history_s": round(history_s, 1),
                      "seed_rides_per_day": rides_per_day, **{f"seed_{k}": v for k, v in seed.items()}}), flush=True)  # fmt: skip


def parity_cost(home: Path, date: str, scratch: Path) -> None:
    """The seed day's aggregates and the date's features recomputed with the engine parity check on."""
    from mltrain_assets.artifacts import ArtifactRef, read_manifest
    from mltrain_assets.pipelines.demand.contract import input_dates
    from mltrain_assets.pipelines.demand.params import AggregatesParams, FeaturesParams
    from mltrain_assets.workloads.common.spark import SparkSettings

    refs, root = home / "storage" / "_refs", f"file://{home}/storage"

    def uri_of(asset: str, partition: str) -> str:
        return ArtifactRef.from_json((refs / asset / f"{partition}.json").read_text()).resolved(root).uri

    events = uri_of("ride_events", date)
    windows = [uri_of("city_hour_aggregates", d) for d in input_dates(date)]
    spark = SparkSettings(master="local[2]")
    for engine in ("duckdb", "spark"):
        out = f"file://{scratch}/parity-{engine}/aggregates"
        params = AggregatesParams(
            rides_uris={date: events}, targets={date: out}, engine=engine, parity=True, spark=spark
        )
        figures = metered(params.command(sys.executable), ENV)
        report = read_manifest(out)["summary"]["engine_parity"]
        print(json.dumps({"bench": "seed_demand_aggregates_with_parity", "engine": engine, **figures,
                          "checked_on": report["engines"][1], "cells_compared": report["cells_compared"],
                          "cells_differing": report["cells_differing"],
                          "max_relative_diff": report["max_relative_diff"]}), flush=True)  # fmt: skip
        out = f"file://{scratch}/parity-{engine}/features"
        params = FeaturesParams(date=date, aggregates_uris=tuple(windows), engine=engine, parity=True, spark=spark)
        figures = metered(params.with_output(out).command(sys.executable), ENV)
        report = read_manifest(out)["summary"]["engine_parity"]
        print(json.dumps({"bench": "seed_demand_features_with_parity", "engine": engine, **figures,
                          "checked_on": report["engines"][1], "check_s": report.get("seconds"),
                          "cells_compared": report["cells_compared"], "cells_differing": report["cells_differing"],
                          "max_relative_diff": report["max_relative_diff"]}), flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date", default="2026-11-27")
    parser.add_argument("--rides-per-day", type=int, default=50_000_000)
    parser.add_argument("--history-rides-per-day", type=int, default=100_000)
    parser.add_argument("--engines", default="duckdb,spark")
    parser.add_argument("--scratch", default="", help="work folder (default: a temporary one, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="mltrain-seed-demand-"))
    scratch.mkdir(parents=True, exist_ok=True)
    landing = f"file://{scratch}/landing"
    try:
        simulate(landing, args.date, args.rides_per_day, args.history_rides_per_day)
        for engine in args.engines.split(","):
            home = scratch / f"home-{engine}"
            env = {**ENV, "MLTRAIN_HOME": str(home), "MLTRAIN_LANDING_URI": landing, "MLTRAIN_SQL_ENGINE": engine,
                   "MLTRAIN_ENGINE_PARITY": "false", "MLTRAIN_SPARK_MASTER": "local[2]"}  # fmt: skip
            for name in ("MLTRAIN_STORAGE_URI", "MLFLOW_TRACKING_URI", "MLTRAIN_MLFLOW_ARTIFACTS_URI", "DAGSTER_HOME"):
                env.pop(name, None)
            subprocess.run([sys.executable, "-c", PIPELINE, engine, args.date], env=env, check=True, cwd=REPO)
        parity_cost(scratch / f"home-{args.engines.split(',')[0]}", args.date, scratch)
    finally:
        if not (args.keep or args.scratch):
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
