"""Control-plane memory stays flat as data grows; the data plane's grows.

Materializes `ride_events` for 7 days through Dagster at two volumes and reports the peak RSS
of the Dagster process (control plane) and of the ingestion workload subprocess (data plane).

    .venv/bin/python bench/control_plane_memory.py
"""

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
    "rides_per_day": volume,
    "rows": outcome.materializations["ride_events"]["rows_in_run"],
    "control_plane_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    "data_plane_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
}))
"""


def main() -> None:
    for volume in (50_000, 400_000):
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
            print(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
