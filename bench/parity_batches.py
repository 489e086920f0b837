"""Engine parity of the aggregates over a 35-day range: one Spark check query per date vs one per batch.

    .venv/bin/python bench/parity_batches.py [--rides-per-day 20000]

DuckDB aggregates each date; Spark re-checks the sampled city-hours, with ``BATCH_DATES`` 1 (the former
one query per date) and the shipped batch size. Prints one JSON line per measurement.
"""

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

from mltrain_assets.artifacts import version_uri
from mltrain_assets.pipelines.demand.contract import FEATURES_WINDOW
from mltrain_assets.pipelines.demand.workloads import aggregates
from mltrain_assets.simulate import simulate
from mltrain_assets.workloads.ingest.workload import ingest_day


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rides-per-day", type=int, default=20_000)
    parser.add_argument("--date", default="2026-11-27")
    args = parser.parse_args()
    shipped = aggregates.BATCH_DATES
    with tempfile.TemporaryDirectory() as tmp:
        landing, storage = f"file://{tmp}/landing", f"file://{tmp}/storage"
        days = simulate("rides", landing, FEATURES_WINDOW.first(args.date), args.date, volume=args.rides_per_day)
        dates = [d["date"] for d in days]
        rides = {day: version_uri(storage, "ride_events", day, "bench") for day in dates}
        for day, uri in rides.items():
            ingest_day(landing, "rides", day, uri)
        # A first pass starts Spark (and warms its JIT), so neither measured pass pays for it.
        for batch, measured in ((shipped, False), (1, True), (shipped, True)):
            aggregates.BATCH_DATES = batch
            version = f"batch{batch}" + ("" if measured else "-warmup")
            targets = {day: version_uri(storage, "city_hour_aggregates", day, version) for day in dates}
            started = time.perf_counter()
            summaries = aggregates.build_aggregates(rides, targets, "duckdb")["dates"]
            seconds = time.perf_counter() - started
            checked = sum(s["engine_parity"]["rows_compared"] for s in summaries.values())
            if not measured:
                continue
            print(
                json.dumps(
                    {
                        "bench": "aggregates_duckdb_with_spark_parity",
                        "days": len(dates),
                        "batch_dates": batch,
                        "spark_check_queries": -(-len(dates) // batch),
                        "city_hours_checked": checked,
                        "seconds": round(seconds, 1),
                    }
                )
            )


if __name__ == "__main__":
    main()
