"""Start N runs at once on one instance, each in its own process (as N run workers would), and report.

Each run materializes three small assets, one per pool the project declares (``spark``,
``training``, ``registry``), with the project's real ``ModelRegistry`` resource, and records when
each step held its slot. Used on a fresh SQLite instance and on a fresh PostgreSQL database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# One run worker: waits until every launcher is ready, then materializes the three pooled assets.
LAUNCH = r"""
import json, sys, time
from pathlib import Path
from dagster import DagsterInstance, asset, materialize
from mltrain_assets.resources.tracking import ModelRegistry

spans_file, ready, gate, n = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])

def pooled(name, pool):
    @asset(name=name, pool=pool)
    def body(registry: ModelRegistry) -> None:
        start = time.time()
        time.sleep(0.4)
        with spans_file.open("a") as out:
            out.write(json.dumps({"pool": pool, "start": start, "end": time.time()}) + "\n")
    return body

assets = [pooled("features", "spark"), pooled("model", "training"), pooled("registered", "registry")]
ready.touch()
while len(list(gate.glob("ready-*"))) < n:  # every launcher starts its run at the same moment
    time.sleep(0.02)
with DagsterInstance.get() as instance:
    result = materialize(assets, instance=instance, resources={"registry": ModelRegistry(tracking_uri="sqlite:///unused.db")})
print("RUN=" + json.dumps({"run_id": result.run_id, "success": result.success}))
"""


def start_runs_at_once(n: int, dagster_home: Path, workdir: Path, env: dict[str, str] | None = None) -> dict:
    """``n`` runs started together on the instance at ``dagster_home``; their outcomes and pool spans."""
    gate = workdir / "gate"
    gate.mkdir(parents=True, exist_ok=True)
    spans_file = workdir / "spans.jsonl"
    launch_env = {**os.environ, **(env or {}), "DAGSTER_HOME": str(dagster_home)}
    launches = [
        subprocess.Popen(
            [sys.executable, "-c", LAUNCH, str(spans_file), str(gate / f"ready-{i}"), str(gate), str(n)],
            env=launch_env,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    outputs = [launch.communicate(timeout=300) for launch in launches]
    runs = []
    for launch, (out, err) in zip(launches, outputs, strict=True):
        runs.append(
            {
                "returncode": launch.returncode,
                "run": json.loads(out.split("RUN=", 1)[1]) if "RUN=" in out else None,
                "stderr": err[-4000:],
            }
        )
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()] if spans_file.exists() else []
    return {"runs": runs, "spans": spans}


def most_at_once(spans: list[dict], pool: str) -> int:
    """The largest number of ``pool`` steps that held a slot at the same moment."""
    edges = sorted(
        [(s["start"], 1) for s in spans if s["pool"] == pool] + [(s["end"], -1) for s in spans if s["pool"] == pool],
        key=lambda edge: (edge[0], edge[1]),  # an end before a start at the same instant
    )
    held = peak = 0
    for _, step in edges:
        held += step
        peak = max(peak, held)
    return peak


def run_mltrain_init(dagster_home: Path, mltrain_home: Path, env: dict[str, str] | None = None) -> str:
    """``mltrain init`` as a user runs it, against this instance profile; its output."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "mltrain_assets.cli", "init"],
        env={
            **os.environ,
            **(env or {}),
            "DAGSTER_HOME": str(dagster_home),
            "MLTRAIN_HOME": str(mltrain_home),
        },
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + f"\n(init took {time.monotonic() - started:.1f}s)"


def claim_at_once(storage, pool: str, claimers: int, rounds: int) -> list[dict]:
    """Each round, ``claimers`` steps claim a slot of ``pool`` at the same moment (one thread each,
    as separate run workers would); then the steps take the slot in turn until each has held it.

    Per round: ``first`` (how many the burst let in), ``holders`` (the steps the slot rows name after
    the burst) and ``most`` (the most claims held at once over the round, the burst included).
    """
    outcomes = []
    for round_no in range(rounds):
        steps = [(f"run-{round_no}-{i}", "step") for i in range(claimers)]
        claimed = _claim_together(storage, pool, steps)
        first = len(claimed)
        holders = _slot_holders(storage, pool)
        most, served = first, set(claimed)
        for _ in range(claimers * 3):  # the rest take the slot in turn as it comes free
            for run_id, step_key in claimed:
                storage.free_concurrency_slot_for_step(run_id, step_key)
            if len(served) == claimers:
                break
            claimed = [s for s in steps if s not in served and storage.claim_concurrency_slot(pool, *s).is_claimed]
            most, served = max(most, len(claimed)), served | set(claimed)
        outcomes.append({"first": first, "holders": holders, "most": most, "served": len(served)})
    return outcomes


def _claim_together(storage, pool: str, steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The steps that won a slot when all claimed at the same moment."""
    import threading

    barrier = threading.Barrier(len(steps))
    claimed: list[tuple[str, str]] = []

    def claim(run_id: str, step_key: str) -> None:
        barrier.wait()
        if storage.claim_concurrency_slot(pool, run_id, step_key).is_claimed:
            claimed.append((run_id, step_key))

    threads = [threading.Thread(target=claim, args=step) for step in steps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return claimed


def _slot_holders(storage, pool: str) -> list[str]:
    from sqlalchemy import text

    with storage.index_connection() as conn:
        rows = conn.execute(
            text("SELECT run_id FROM concurrency_slots WHERE concurrency_key = :pool AND step_key IS NOT NULL"),
            {"pool": pool},
        )
        return sorted(row[0] for row in rows)
