"""Dagster's slot claim race, made certain: N claimers run Dagster's own two-statement claim
(``SqlEventLogStorage._claim_concurrency_slot``: SELECT a free slot, then UPDATE it by id), each
paused after its SELECT until every claimer has selected. All of them read the same free slot, so
without the claim guard each UPDATE lands and every claimer is CLAIMED on a one-slot pool.

PostgreSQL: one thread per claimer (each claim has a connection of its own). SQLite: one process per
claimer, as run workers are (Dagster's SQLite storage holds a process-wide lock while a connection is
open, so claimers in threads of one process never interleave: a threaded burst passes with or without
the guard).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


class _PausedAfterFirstStatement:
    """A connection that calls ``pause()`` once its first statement (the claim's SELECT) has run.

    The SELECT runs under ``turn`` when given: two SELECTs at the same instant would skip each other's row
    lock (``SKIP LOCKED``) and one would read no free slot; in turn, each reads the slot free.
    """

    def __init__(self, conn: Any, pause: Callable[[], None], turn: Any = None):
        self._conn, self._pause, self._turn, self._statements = conn, pause, turn, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        first = self._statements == 0
        with self._turn if first and self._turn is not None else contextlib.nullcontext():
            result = self._conn.execute(*args, **kwargs)
        self._statements += 1
        if first:
            self._pause()
        return result


def claim_paused(storage: Any, pool: str, run_id: str, pause: Callable[[], None], turn: Any = None) -> str:
    """One claim by Dagster's own code, paused between its two statements; the slot status's name."""
    original = storage.index_connection

    @contextlib.contextmanager
    def paused() -> Iterator[Any]:
        with original() as conn:
            yield _PausedAfterFirstStatement(conn, pause, turn)

    storage.index_connection = paused
    try:
        return storage._claim_concurrency_slot(pool, run_id, "step").name
    finally:
        del storage.index_connection  # the class's method again


def claim_interleaved_in_threads(make_storage: Callable[[], Any], pool: str, claimers: int) -> list[str]:
    """``claimers`` threads, each with its own storage object, interleaved; each claim's status."""
    barrier = threading.Barrier(claimers, timeout=60)
    turn = threading.Lock()  # the SELECTs one after another (each committed before the next), UPDATEs after all
    statuses: dict[int, str] = {}

    def claim(i: int) -> None:
        storage = make_storage()
        try:
            statuses[i] = claim_paused(storage, pool, f"run-{i}", barrier.wait, turn)
        finally:
            storage.dispose()

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [statuses[i] for i in range(claimers)]


# One claimer process on the instance at $DAGSTER_HOME: waits after its SELECT until all have selected.
CLAIMER = r"""
import json, sys, time
from pathlib import Path
from dagster import DagsterInstance
from mltrain_assets_tests.instance.claim_race import claim_paused

pool, me, gate, claimers = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])

def all_selected():
    (gate / f"selected-{me}").touch()
    deadline = time.monotonic() + 60
    while len(list(gate.glob("selected-*"))) < claimers and time.monotonic() < deadline:
        time.sleep(0.01)

with DagsterInstance.get() as instance:
    print("STATUS=" + json.dumps(claim_paused(instance.event_log_storage, pool, f"run-{me}", all_selected)))
"""


def claim_interleaved_in_processes(dagster_home: Path, pool: str, claimers: int, gate: Path) -> list[str]:
    """``claimers`` processes on the instance at ``dagster_home``, interleaved; each claim's status."""
    gate.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    launches = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, pool, str(i), str(gate), str(claimers)],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(claimers)
    ]
    statuses = []
    for launch in launches:
        out, err = launch.communicate(timeout=180)
        assert launch.returncode == 0 and "STATUS=" in out, err[-3000:]
        statuses.append(json.loads(out.split("STATUS=", 1)[1]))
    return statuses
