"""Time to a clear failure when a service is down: the object store, MLflow, the Spark master.

    .venv/bin/python bench/service_outages.py [--only s3_refused,s3_silent,mlflow_refused,spark_refused]

Each probe points a real client at 127.0.0.1 ports where nothing listens ("refused") or where a
socket accepts connections and never answers ("silent"), with the shipped settings, and prints
one JSON line: seconds until the error, its type and message. The README's "Failure modes" table
records them.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _silent_port() -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)  # accepts (the kernel's backlog), never reads or answers
    return server, server.getsockname()[1]


def _s3(port: int) -> None:
    os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "x"})
    os.environ["AWS_SECRET_ACCESS_KEY"] = "y"
    from mltrain_assets.artifacts import read_manifest

    read_manifest("s3://mltrain/ride_events/2026-11-27/v=0123456789ab")


def _mlflow(port: int) -> None:
    from mltrain_assets.resources.tracking import ModelRegistry

    ModelRegistry(tracking_uri=f"http://127.0.0.1:{port}").find_version("demand-forecast-nyc", "0123456789ab")


def _spark(port: int) -> None:
    from mltrain_assets.workloads.common.spark import SparkSettings, spark_session

    spark, _ = spark_session(SparkSettings(master=f"spark://127.0.0.1:{port}"), "outage-probe")
    spark.stop()


PROBES = {
    "s3_refused": (_s3, False),
    "s3_silent": (_s3, True),
    "mlflow_refused": (_mlflow, False),
    "spark_refused": (_spark, False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PROBES))
    args = parser.parse_args()
    for name in args.only.split(","):
        probe, silent = PROBES[name]
        server, port = _silent_port() if silent else (None, _free_port())
        started = time.monotonic()
        try:
            probe(port)
            outcome = {"error": None}
        except Exception as error:  # the point: what the user sees
            outcome = {"error": type(error).__name__, "message": str(error)[:300]}
        finally:
            if server is not None:
                server.close()
        print(json.dumps({"bench": f"outage_{name}", "seconds": round(time.monotonic() - started, 1), **outcome}))


if __name__ == "__main__":
    main()
