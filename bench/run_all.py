"""Run the benchmark scripts; figures go to BENCHMARKS.md by hand, with the machine.

``make bench``: the everyday ones (minutes). ``make bench-seed``: the seed-scale ones (a 50M-ride
day on both engines, 20M interactions, control-plane overhead and memory at 1x/10x; ~40 min here).
"""

import subprocess
import sys
from pathlib import Path

EVERYDAY = ("data_plane.py", "parity_batches.py", "control_plane_memory.py", "service_outages.py")
SEED = ("seed_demand.py", "seed_recsys.py", "control_plane_memory.py", "control_plane_overhead.py")

for script in SEED if "--seed" in sys.argv[1:] else EVERYDAY:
    print(f"== bench/{script}", flush=True)
    subprocess.run([sys.executable, str(Path(__file__).parent / script)], check=True)
