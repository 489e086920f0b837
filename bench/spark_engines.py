"""Features and aggregates on DuckDB, a classic Spark session and Spark Connect: one run, the same data.

    .venv/bin/python bench/spark_engines.py [--rides-per-day 20000] [--big-day-rides 1000000] [--range-days 35]
        [--date 2026-11-27] [--classic-range estimate|session] [--force] [--scratch DIR]

Lands and ingests every day the range needs (the features window of each of its ``--range-days``
dates: 69 days for 35), the partition date itself at ``--big-day-rides`` (the 1M-ride day), and
aggregates the history once on DuckDB (setup, timed). Then, per engine, on those same files:

- ``aggregates_1m``: the big day's ``city_hour_aggregates``;
- ``features_one_date``: features for the date from its 35 days of aggregates;
- ``features_range``: features for each of the ``--range-days`` dates (a backfill).

Engines and how each is run (``engine`` / ``mode`` of the figure lines):

- ``duckdb``: in this process (``in_process``) and as the workload's own process (``workload_process``,
  as the compute backend launches it: interpreter, imports, query, commit).
- ``spark_classic``: the workload's own process with ``local[2]``: what every classic step pays, the
  JVM start and first-query code generation included. Its range is ``--range-days`` such steps (a classic
  backfill launches one per date): estimated from the measured step, or with ``--classic-range session``
  measured in one process holding one classic session across the dates (the JVM paid once).
- Spark Connect: a local server (``local[2]``, 127.0.0.1, started once here, its start timed), then in this
  process one client session: ``spark_connect_cold`` (the first query, on a fresh server),
  ``spark_connect_warm`` (the second), the range in the same session across the dates (as a backfill
  through a long-lived server runs; ``--range-budget-s`` stops it early and extrapolates, saying so), the
  aggregates warm; and ``spark_connect`` as the workload's own process (a new client session per step, as
  ``MLTRAIN_SPARK_MASTER=sc://...`` runs a step). The server is ``cli.sparkconnect.LocalSparkConnectServer``.

Every Spark result is compared cell by cell with DuckDB's (``cells_differing``). One JSON line per figure;
run alone it takes the bench lock and refuses a busy machine like ``run_all.py`` (``guard``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script: the repo root
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

from bench import guard
from bench.seed_demand import ENV, metered
from mltrain_assets.artifacts import verified_file_uri, version_uri
from mltrain_assets.pipelines.demand.contract import FEATURES_WINDOW, input_dates
from mltrain_assets.pipelines.demand.params import AggregatesParams, FeaturesParams
from mltrain_assets.pipelines.demand.simulate import write_rides_day
from mltrain_assets.pipelines.demand.workloads import parity
from mltrain_assets.pipelines.demand.workloads.aggregates import AGGREGATES_FILE, build_aggregates
from mltrain_assets.pipelines.demand.workloads.feature_sql import FEATURE_NAMES, KEY_COLUMNS, LABEL
from mltrain_assets.pipelines.demand.workloads.features import compute_features
from mltrain_assets.simulate import simulate
from mltrain_assets.workloads.common.dates import shift
from mltrain_assets.workloads.common.spark import SparkSettings
from mltrain_assets.workloads.ingest.workload import ingest_day

CLASSIC = SparkSettings(master="local[2]")
# One classic session across the range's dates, in a process of its own (this one becomes a Connect client).
CLASSIC_SESSION = r"""
import json, sys, time
from mltrain_assets.pipelines.demand.workloads.features import compute_features
from mltrain_assets.workloads.common.spark import SparkSettings, spark_session
files_by_date = json.loads(sys.argv[1])
session, _ = spark_session(SparkSettings(master="local[2]"), "bench-classic-range")
started = time.monotonic()
for date, files in files_by_date.items():
    compute_features(files, date, "spark")
print(json.dumps({"queries_s": round(time.monotonic() - started, 1)}))
"""


class Data:
    """The landed, ingested and aggregated days of one run, and where each engine's outputs go."""

    def __init__(self, scratch: Path, date: str, range_days: int):
        self.scratch, self.date = scratch, date
        self.landing, self.storage = f"file://{scratch}/landing", f"file://{scratch}/storage"
        self.range = [shift(date, -i) for i in range(range_days - 1, -1, -1)]
        self.dates = FEATURES_WINDOW.dates(date)
        first = FEATURES_WINDOW.first(self.range[0])
        self.all_dates = [shift(first, i) for i in range(len(input_dates(date)) + range_days - 1)]
        self.rides = {d: version_uri(self.storage, "ride_events", d, "bench") for d in self.all_dates}
        self.aggregates = {d: version_uri(self.storage, "city_hour_aggregates", d, "duckdb") for d in self.all_dates}
        self._files: dict[str, str] = {}

    def files(self, date: str) -> list[str]:
        """The ``aggregates.parquet`` files of ``date``'s features window (checked once, outside the timings)."""
        for d in input_dates(date):
            if d not in self._files:
                self._files[d] = verified_file_uri(self.aggregates[d], AGGREGATES_FILE)
        return [self._files[d] for d in input_dates(date)]

    def out(self, asset: str, label: str) -> str:
        return version_uri(self.storage, asset, self.date, f"{label}-{time.monotonic_ns()}")


def prepare(data: Data, rides_per_day: int, big_day_rides: int, figures: guard.Figures) -> None:
    started = time.monotonic()
    history = simulate("rides", data.landing, data.all_dates[0], shift(data.date, -1), volume=rides_per_day)
    big = write_rides_day(data.landing, data.date, big_day_rides)
    simulate_s = time.monotonic() - started
    started = time.monotonic()
    for day, uri in data.rides.items():
        ingest_day(data.landing, "rides", day, uri)
    ingest_s = time.monotonic() - started
    started = time.monotonic()
    history_dates = data.all_dates[:-1]
    build_aggregates({d: data.rides[d] for d in history_dates}, {d: data.aggregates[d] for d in history_dates},
                     "duckdb", check_parity_on_other_engine=False)  # fmt: skip
    figures.emit({"bench": "spark_engines_setup", "days": len(data.all_dates), "history_rides_per_day": rides_per_day,
                  "history_rides": sum(d["rows"] for d in history), "big_day": data.date, "big_day_rides": big["rows"],
                  "simulate_s": round(simulate_s, 1), "ingest_s": round(ingest_s, 1),
                  "history_aggregates_duckdb_s": round(time.monotonic() - started, 1)})  # fmt: skip


def timed(call) -> tuple[float, object]:
    started = time.monotonic()
    result = call()
    return round(time.monotonic() - started, 2), result


def differing(reference, table, engine: str) -> int:
    values = [LABEL, *FEATURE_NAMES]
    return parity.compare(reference, table, keys=KEY_COLUMNS, values=values, engines=("duckdb", engine))[
        "cells_differing"
    ]


def step(command: list[str]) -> dict:
    """A workload run as the compute backend runs it: wall (``seconds``), CPU and peak RSS of its process tree."""
    figures = metered(command, ENV)
    return {**figures, "seconds": figures["wall_s"]}


def features_step(data: Data, engine: str, spark: SparkSettings) -> dict:
    """Features for the date as the workload's own process (parity off: one engine's cost)."""
    params = FeaturesParams(date=data.date, aggregates_uris=tuple(data.aggregates[d] for d in data.dates),
                            engine=engine, parity=False, spark=spark)  # fmt: skip
    return step(params.with_output(data.out("features", engine)).command(sys.executable))


def aggregates_step(data: Data, engine: str, spark: SparkSettings) -> dict:
    """The big day's aggregates as the workload's own process."""
    out = data.out("city_hour_aggregates", engine)
    params = AggregatesParams(rides_uris={data.date: data.rides[data.date]}, targets={data.date: out}, engine=engine,
                              parity=False, spark=spark)  # fmt: skip
    return step(params.command(sys.executable))


def duckdb_part(data: Data, rides: int, figures: guard.Figures):
    """DuckDB: the big day's aggregates (kept: every engine's features read them), features, the range."""
    seconds, _ = timed(lambda: build_aggregates({data.date: data.rides[data.date]},
                                                {data.date: data.aggregates[data.date]}, "duckdb",
                                                check_parity_on_other_engine=False))  # fmt: skip
    base = {"engine": "duckdb", "mode": "in_process"}
    figures.emit({"bench": "spark_engines_aggregates_1m", **base, "rides": rides, "seconds": seconds})
    figures.emit({"bench": "spark_engines_aggregates_1m", "engine": "duckdb", "mode": "workload_process",
                  "rides": rides, **aggregates_step(data, "duckdb", CLASSIC)})  # fmt: skip
    seconds, reference = timed(lambda: compute_features(data.files(data.date), data.date, "duckdb"))
    figures.emit({"bench": "spark_engines_features_one_date", **base, "rows": reference.num_rows, "seconds": seconds})
    figures.emit({"bench": "spark_engines_features_one_date", "engine": "duckdb", "mode": "workload_process",
                  **features_step(data, "duckdb", CLASSIC)})  # fmt: skip
    per_date, _, _ = each_date(data, 0, lambda d: compute_features(data.files(d), d, "duckdb"))
    figures.emit({"bench": "spark_engines_features_range", **base,
                  **range_figure(data, per_date, "one DuckDB connection per date, in one process")})  # fmt: skip
    return reference


def classic_part(data: Data, rides: int, range_mode: str, figures: guard.Figures) -> None:
    base = {"engine": "spark_classic", "mode": "workload_process", "master": CLASSIC.master}
    figures.emit({"bench": "spark_engines_aggregates_1m", **base, "rides": rides,
                  **aggregates_step(data, "spark", CLASSIC)})  # fmt: skip
    one = features_step(data, "spark", CLASSIC)
    figures.emit({"bench": "spark_engines_features_one_date", **base, **one})
    if range_mode == "session":
        files = json.dumps({d: data.files(d) for d in data.range})
        figures.emit({"bench": "spark_engines_features_range", **base, "dates": len(data.range),
                      **step([sys.executable, "-c", CLASSIC_SESSION, files]),
                      "how": "one classic session across the dates, in one process (JVM started once)"})  # fmt: skip
    else:
        how = f"{len(data.range)} x the measured workload step (a classic backfill: one step per date)"
        figures.emit({"bench": "spark_engines_features_range", **base, **range_figure(data, [one["wall_s"]], how)})


def range_figure(data: Data, seconds_per_date: list[float], how: str) -> dict:
    """A range's figure: its ``seconds`` measured over every date, or extrapolated from the dates the budget allowed."""
    measured, total = len(seconds_per_date), round(sum(seconds_per_date), 1)
    partial = measured < len(data.range)
    seconds = round(total / measured * len(data.range), 1) if partial else total
    return {"dates": len(data.range), "seconds": seconds, "measured_dates": measured, "measured_s": total,
            "per_date_s": round(total / measured, 2), "estimated": partial, "how": how}  # fmt: skip


def each_date(data: Data, budget_s: float, query) -> tuple[list[float], str, object]:
    """``query(date)`` over the range's dates in order until ``budget_s`` is spent (0: all): seconds, last date, result."""
    seconds, date, result, started = [], "", None, time.monotonic()
    for date in data.range:
        took, result = timed(lambda d=date: query(d))
        seconds.append(took)
        if budget_s and time.monotonic() - started > budget_s:
            break
    return seconds, date, result


def connect_part(data: Data, rides: int, reference, budget_s: float, figures: guard.Figures) -> None:
    from pyspark.sql import SparkSession

    from mltrain_assets.cli.sparkconnect import LocalSparkConnectServer

    server = LocalSparkConnectServer(data.scratch / "spark-connect", master=CLASSIC.master, memory="2g",
                                     conf={"spark.sql.shuffle.partitions": "8"}, timeout_s=600)  # fmt: skip
    start_s, url = timed(server.__enter__)
    try:
        settings = SparkSettings(master=url)
        session_s, session = timed(lambda: SparkSession.builder.remote(url).getOrCreate())
        figures.emit({"bench": "spark_engines_connect_server", "url": url, "master": CLASSIC.master,
                      "start_s": start_s, "client_session_s": session_s})  # fmt: skip
        base = {"mode": "in_process", "url": url}
        # The session above is the process's active one: the workloads' SQL adapter (spark_session) reuses it.
        for engine in ("spark_connect_cold", "spark_connect_warm"):
            seconds, table = timed(lambda: compute_features(data.files(data.date), data.date, "spark", settings))
            figures.emit({"bench": "spark_engines_features_one_date", "engine": engine, **base, "seconds": seconds,
                          "rows": table.num_rows, "cells_differing": differing(reference, table, engine)})  # fmt: skip
        per_date, last, table = each_date(
            data, budget_s, lambda d: compute_features(data.files(d), d, "spark", settings)
        )
        how = f"one Connect session across the {len(data.range)} dates (a backfill through a long-lived server)"
        same = differing(compute_features(data.files(last), last, "duckdb"), table, "spark_connect")
        figures.emit({"bench": "spark_engines_features_range", "engine": "spark_connect", **base,
                      **range_figure(data, per_date, how), "cells_differing_last_date": same})  # fmt: skip
        target = data.out("city_hour_aggregates", "connect")
        seconds, _ = timed(lambda: build_aggregates({data.date: data.rides[data.date]}, {data.date: target}, "spark",
                                                    settings, check_parity_on_other_engine=False))  # fmt: skip
        figures.emit({"bench": "spark_engines_aggregates_1m", "engine": "spark_connect_warm", **base, "rides": rides,
                      "seconds": seconds})  # fmt: skip
        # As the compute backend runs a step with MLTRAIN_SPARK_MASTER=sc://...: a new process, a new client session.
        figures.emit({"bench": "spark_engines_features_one_date", "engine": "spark_connect", "mode": "workload_process",
                      "url": url, **features_step(data, "spark", settings)})  # fmt: skip
        figures.emit({"bench": "spark_engines_aggregates_1m", "engine": "spark_connect", "mode": "workload_process",
                      "url": url, "rides": rides, **aggregates_step(data, "spark", settings)})  # fmt: skip
        session.stop()
    finally:
        server.__exit__()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date", default="2026-11-27")
    parser.add_argument("--rides-per-day", type=int, default=20_000, help="every day but the date")
    parser.add_argument("--big-day-rides", type=int, default=1_000_000, help="the date's rides")
    parser.add_argument("--range-days", type=int, default=35)
    parser.add_argument("--range-budget-s", type=float, default=0,
                        help="stop the Connect range after this many seconds and extrapolate (0: every date)")  # fmt: skip
    parser.add_argument("--classic-range", choices=("estimate", "session"), default="estimate")
    parser.add_argument("--engines", default="duckdb,classic,connect", help="a subset to run (duckdb always runs)")
    parser.add_argument("--force", action="store_true", help="record on a busy machine; figures marked under load")
    parser.add_argument("--scratch", default="", help="work folder (default: a temporary one, removed after)")
    args = parser.parse_args()
    try:
        held = guard.hold(args.force)
    except guard.Busy as busy:
        print(f"bench: not recording: {busy}", file=sys.stderr, flush=True)
        return guard.EXIT_BUSY
    figures = guard.Figures(not held.under_runner, held.under_load)
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="mltrain-spark-engines-"))
    scratch.mkdir(parents=True, exist_ok=True)
    engines = set(args.engines.split(","))
    try:
        data = Data(scratch.resolve(), args.date, args.range_days)
        prepare(data, args.rides_per_day, args.big_day_rides, figures)
        reference = duckdb_part(data, args.big_day_rides, figures)
        if "classic" in engines:
            classic_part(data, args.big_day_rides, args.classic_range, figures)
        if "connect" in engines:
            connect_part(data, args.big_day_rides, reference, args.range_budget_s, figures)
        figures.summary()
    finally:
        held.release()
        if not args.scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
