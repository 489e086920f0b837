"""Control-plane memory stays flat as data grows; the data plane's grows.

Materializes `ride_events` for 7 days through Dagster at 1x (50k rides/day) and 10x (500k) and
reports the peak RSS of the Dagster process (control plane) and of the ingestion workload
subprocess (data plane), then the 10x / 1x ratio of each (goal: control plane <= 1.1).

    .venv/bin/python bench/control_plane_memory.py
"""

import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, resource, sys
from mltrain_assets.settings import apply_defaults
env = apply_defaults()
from mltrain_assets.cli import demo
volume = int(sys.argv[1])
outcome = demo.execute("ride_events_job", "ride_events", partition_range=("2026-11-21", "2026-11-27"))
assert outcome.success, outcome.error
print(json.dumps({
    "bench": "control_plane_memory",
    "rides_per_day": volume,
    "rows": outcome.materializations["ride_events"]["rows_in_run"],
    "control_plane_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    "data_plane_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
}))
"""


VOLUMES = (50_000, 500_000)  # 1x and 10x


def main() -> None:
    figures = []
    for volume in VOLUMES:
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "MLTRAIN_HOME": home}
            # Landing data first, in its own process, so the measured process only runs Dagster.
            mltrain = os.path.join(os.path.dirname(sys.executable), "mltrain")
            subprocess.run(
                [
                    mltrain,
                    "simulate",
                    "--dataset",
                    "rides",
                    "--start",
                    "2026-11-21",
                    "--end",
                    "2026-11-27",
                    "--rides-per-day",
                    str(volume),
                ],
                env=env,
                check=True,
                capture_output=True,
            )
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(volume)], env=env, capture_output=True, text=True, check=True
            )
            figures.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(figures[-1]), flush=True)
    low, high = figures[0], figures[-1]
    ratio = {
        "bench": "control_plane_memory_ratio",
        "volume_ratio": high["rides_per_day"] / low["rides_per_day"],
        "control_plane_rss_ratio": round(high["control_plane_peak_rss_mb"] / low["control_plane_peak_rss_mb"], 3),
        "data_plane_rss_ratio": round(high["data_plane_peak_rss_mb"] / low["data_plane_peak_rss_mb"], 3),
    }
    print(json.dumps(ratio), flush=True)


if __name__ == "__main__":
    main()
