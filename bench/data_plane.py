"""Data-plane speed: simulator throughput, ingestion, and the same aggregates and feature SQL on Spark vs DuckDB.

    .venv/bin/python bench/data_plane.py [--rides-per-day 100000]

Prints one JSON line per measurement; BENCHMARKS.md records them with the machine.
"""

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

from mltrain_assets.artifacts import version_uri
from mltrain_assets.pipelines.demand.contract import FEATURES_WINDOW
from mltrain_assets.pipelines.demand.workloads.aggregates import build_aggregates
from mltrain_assets.pipelines.demand.workloads.features import build_features
from mltrain_assets.simulate import simulate
from mltrain_assets.workloads.ingest.workload import ingest_day


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rides-per-day", type=int, default=100_000)
    parser.add_argument("--date", default="2026-11-27")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        landing, storage = f"file://{tmp}/landing", f"file://{tmp}/storage"
        first = FEATURES_WINDOW.first(args.date)
        started = time.perf_counter()
        days = simulate("rides", landing, first, args.date, volume=args.rides_per_day)
        seconds = time.perf_counter() - started
        rows = sum(d["rows"] for d in days)
        print(
            json.dumps(
                {
                    "bench": "simulate_rides",
                    "days": len(days),
                    "rows": rows,
                    "seconds": round(seconds, 1),
                    "rows_per_minute": round(rows / seconds * 60),
                }
            )
        )

        dates = [d["date"] for d in days]
        started = time.perf_counter()
        uris = []
        for day in dates:
            uri = version_uri(storage, "ride_events", day, "bench")
            ingest_day(landing, "rides", day, uri)
            uris.append(uri)
        seconds = time.perf_counter() - started
        print(
            json.dumps(
                {
                    "bench": "ingest_rides",
                    "days": len(uris),
                    "rows": rows,
                    "seconds": round(seconds, 1),
                    "rows_per_second": round(rows / seconds),
                }
            )
        )

        for engine in ("duckdb", "spark"):
            # Each raw day aggregated once (one launch for the window), then features from the aggregates.
            targets = {day: version_uri(storage, "city_hour_aggregates", day, engine) for day in dates}
            started = time.perf_counter()
            build_aggregates(dict(zip(dates, uris, strict=True)), targets, engine, check_parity_on_other_engine=False)
            print(
                json.dumps(
                    {
                        "bench": f"aggregates_{engine}",
                        "days": len(dates),
                        "input_rows": rows,
                        "seconds": round(time.perf_counter() - started, 1),
                    }
                )
            )
            started = time.perf_counter()
            summary = build_features(
                [targets[d] for d in dates],
                args.date,
                version_uri(storage, "features", args.date, engine),
                engine=engine,
                check_parity_on_other_engine=False,
            )
            print(
                json.dumps(
                    {
                        "bench": f"features_{engine}",
                        "input_days": len(dates),
                        "output_rows": summary["rows"],
                        "features": summary["n_features"],
                        "seconds": round(time.perf_counter() - started, 1),
                    }
                )
            )


if __name__ == "__main__":
    main()
