"""Run every benchmark script (`make bench`); figures go to BENCHMARKS.md by hand, with the machine."""

import subprocess
import sys
from pathlib import Path

for script in ("data_plane.py", "control_plane_memory.py"):
    print(f"== bench/{script}", flush=True)
    subprocess.run([sys.executable, str(Path(__file__).parent / script)], check=True)
