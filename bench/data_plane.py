"""Data-plane speed: simulator throughput, and the same feature SQL on Spark vs DuckDB.

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
from mltrain_assets.simulate import simulate
from mltrain_assets.workloads.demand.contract import FEATURES_WINDOW
from mltrain_assets.workloads.demand.features import build_features
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

        started = time.perf_counter()
        uris = []
        for day in (d["date"] for d in days):
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
            started = time.perf_counter()
            summary = build_features(
                uris, args.date, version_uri(storage, "features", args.date, engine), engine=engine
            )
            print(
                json.dumps(
                    {
                        "bench": f"features_{engine}",
                        "input_rows": rows,
                        "output_rows": summary["rows"],
                        "features": summary["n_features"],
                        "seconds": round(time.perf_counter() - started, 1),
                    }
                )
            )


if __name__ == "__main__":
    main()
