"""Run the benchmark scripts; figures go to BENCHMARKS.md by hand, with the machine and the load they ran at.

    .venv/bin/python bench/run_all.py [--seed] [--force] [--out FILE] [SCRIPT ...]

``make bench``: the everyday ones (minutes). ``make bench-seed``: the seed-scale ones (a 50M-ride
day on both engines, 20M interactions, Spark engines (DuckDB / classic / Connect), control-plane
overhead and memory at 1x/10x; ~50 min here).

Refuses to record (exit 75, one line saying why) while the machine is busy: load above the core count
or another bench running (``guard``). ``--force`` records anyway and marks the figures "under load".
Every JSON figure line gets the load before and after it (``"load"``), is written to ``--out``
(default ``$MLTRAIN_HOME/bench/<seed|everyday>-<UTC time>.jsonl``), and is followed by its goals
(``goals``) with met / not met; the ratios and a summary of every verdict come at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script: the repo root

from bench import guard

BENCH = Path(__file__).resolve().parent
EVERYDAY = ("data_plane.py", "parity_batches.py", "control_plane_memory.py", "service_outages.py")
SEED = ("seed_demand.py", "seed_recsys.py", "spark_engines.py", "control_plane_memory.py", "control_plane_overhead.py")


def default_out(seed: bool) -> Path:
    home = Path(os.environ.get("MLTRAIN_HOME") or Path.cwd() / ".mltrain")
    return home / "bench" / f"{'seed' if seed else 'everyday'}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.jsonl"


def run_script(command: str, figures: guard.Figures) -> int:
    """Run one bench script (a name under bench/ or a path, then its arguments); its figures go to ``figures``."""
    script, *script_args = shlex.split(command)
    path = Path(script) if os.path.isabs(script) else BENCH / script
    print(f"== {command}", flush=True)
    with subprocess.Popen([sys.executable, str(path), *script_args], stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        for raw in child.stdout:
            try:
                figure = json.loads(raw)
            except ValueError:
                figure = None
            if isinstance(figure, dict) and "bench" in figure:
                figures.emit(figure)
            else:
                print(raw, end="", flush=True)
    return child.returncode


def main(
    argv: Sequence[str] | None = None,
    measure: Callable[[], guard.Reading] = guard.reading,
    quick: Callable[[], guard.Reading] = guard.quick_reading,
) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", action="store_true", help="the seed-scale scripts (make bench-seed)")
    parser.add_argument("--force", action="store_true", help="record on a busy machine; figures marked under load")
    parser.add_argument("--out", type=Path, help="JSON lines file of the annotated figures")
    parser.add_argument("--lock", type=Path, default=guard.LOCK_PATH, help=argparse.SUPPRESS)
    parser.add_argument(
        "scripts",
        nargs="*",
        help="bench scripts to run instead of the set: a name under bench/ (or a path), with its arguments in the same word",
    )
    args = parser.parse_args(argv)
    try:
        held = guard.hold(args.force, args.lock, measure)
    except guard.Busy as busy:
        print(f"bench: not recording: {busy}", file=sys.stderr, flush=True)
        return guard.EXIT_BUSY
    out_path = args.out or default_out(args.seed)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    start = held.reading
    marked = (
        f"; forced: every figure marked {guard.under_load_note(start, start, started_busy=True)}"
        if held.under_load
        else ""
    )
    print(f"bench: {start.words()}{marked}; figures -> {out_path}", flush=True)
    status = 0
    try:
        with out_path.open("a") as out:
            figures = guard.Figures(True, held.under_load, quick, out)
            for index, command in enumerate(args.scripts or (SEED if args.seed else EVERYDAY)):
                if index:
                    figures.restart()  # the first script's "before" is the reading the Figures started with
                status = run_script(command, figures)
                if status != 0:
                    print(f"bench: {command} exited {status}; stopping", file=sys.stderr, flush=True)
                    break
            figures.summary()
    finally:
        held.release()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
