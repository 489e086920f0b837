"""Ordinary mistakes at the command line: each is refused before any work, in one line naming the bad value and
what would be valid, with exit code 2, no traceback, and the home left as it was.

Each mistake runs the real ``mltrain`` entry point in a subprocess (a few at a time: most of a refusal is import
time) against one prepared home, snapshotted before and after the whole catalogue.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mltrain_assets.loopback import free_port
from mltrain_assets_tests.conftest import SETTINGS

MLTRAIN = [sys.executable, "-m", "mltrain_assets.cli"]
DAY = "2026-03-10"
CITIES = "nyc, sf, chicago, la, seattle, austin, boston or miami"


@dataclass(frozen=True)
class Mistake:
    argv: tuple[str, ...]
    says: str  # the one line, after "mltrain <command>: "
    env: dict[str, str] = field(default_factory=dict)
    command: str = ""  # the prefix's command when it is not argv[0] ("" for `mltrain:` alone)

    @property
    def prefix(self) -> str:
        return f"mltrain {self.command}: " if self.command else "mltrain: "


def _mistakes(port_in_use: int, nothing_there: int) -> list[Mistake]:
    def m(*argv: str, says: str, env: dict[str, str] | None = None, command: str | None = None) -> Mistake:
        return Mistake(argv, says, env or {}, argv[0] if command is None else command)

    return [
        m("frobnicate", says="No such command 'frobnicate'. Did you mean 'relocate'? The commands: backfill, demo, ",
          command=""),
        m("simulate", "--dataset", "rides", "--start", "2026-13-01",
          says="Invalid value for '--start': '2026-13-01' is not a date: expected YYYY-MM-DD, e.g. 2026-11-27"),
        m("simulate", "--dataset", "trips", "--start", DAY, says="Invalid value for '--dataset': 'trips' is not one of"),
        m("simulate", "--dataset", "rides", "--start", DAY, "--end", "2026-03-01",
          says="--start 2026-03-10 is after --end 2026-03-01: expected --start on or before --end"),
        m("simulate", "--dataset", "rides", "--start", DAY, "--cities", "nyc,atlantis",
          says=f"unknown city (--cities) 'atlantis': expected {CITIES}"),
        m("simulate", "--dataset", "interactions", "--start", DAY, "--users", "0",
          says="users must be a positive number, got 0"),
        m("simulate", "--dataset", "rides", "--start", DAY, "--rows-per-day", "-5",
          says="--rows-per-day -5 is too small: expected a number >= 1"),
        m("demo", "--date", "2026-01-05",
          says="--date 2026-01-05 reads the days from 2025-12-02, which is before the first partition 2026-01-01: "
          "expected a date from 2026-02-04 to "),
        m("demo", "--date", "2999-01-01", says="--date 2999-01-01 is not a partition yet: expected a date from "),
        m("demo", "--pipeline", "fraud", says="Invalid value for '--pipeline': 'fraud' is not one of 'demand', 'recsys'"),
        m("demo", "--date", DAY, "--parallel", "0", says="--parallel 0 is too small: expected a number >= 1"),
        m("backfill", "--start", DAY, "--end", "2026-03-01", says="--start 2026-03-10 is after --end 2026-03-01"),
        m("backfill", "--start", "2026-01-02", "--end", DAY, "--pipeline", "recsys",
          says="--start 2026-01-02 reads the days from 2025-12-"),
        m("backfill", "--start", DAY, "--end", DAY, "--cities", "atlantis",
          says=f"unknown city (--cities) 'atlantis': expected {CITIES}"),
        m("backfill", "--start", DAY, "--end", DAY, "--url", f"http://127.0.0.1:{nothing_there}",
          says=f"--url http://127.0.0.1:{nothing_there}: nothing answers there"),
        m("lineage", "demand-forecast-atlantis", "1",
          says="unknown model 'demand-forecast-atlantis': expected demand-forecast-nyc, "),
        m("lineage", "recommender", "latest", says="version 'latest' is not a version number: expected 1, 2, ..."),
        m("reproduce", "recommender", "3", says="recommender has no version 3: none is registered yet"),
        m("materialize", "--asset", "ride_event", "--partition", DAY,
          says="--asset: unknown asset 'ride_event': expected "),
        m("materialize", "--asset", "city_demand_model", "--partition", f"atlantis|{DAY}",
          says=f"--partition 'atlantis|{DAY}': unknown city 'atlantis': expected nyc, "),
        m("materialize", "--asset", "ride_events", "--partition", "2025-06-01",
          says="--partition 2025-06-01 is before the first partition 2026-01-01"),
        m("materialize", "--asset", "ride_events", "--partition-range", DAY,
          says=f"--partition-range '{DAY}': expected START...END, e.g. 2026-11-01...2026-11-07"),
        m("manifests", "--asset", "nope", says="--asset: unknown asset 'nope': expected "),
        m("report", "--date", "2025-06-01", says="--date 2025-06-01 is before the first partition 2026-01-01"),
        m("summary", "--date", "2026-02-30", says="Invalid value for '--date': '2026-02-30' is not a date"),
        m("relocate", "--from", "old-bucket", "--to", "s3://new-bucket/mlartifacts",
          says="--from 'old-bucket' is not a storage root: expected s3://bucket/prefix or file:///absolute/path"),
        m("dev", "--port", str(port_in_use), says=f"--port {port_in_use} is in use on 127.0.0.1"),
        m("summary", env={"MLTRAIN_CITIES": "nyc,atlantis"},
          says="mltrain settings are not usable: MLTRAIN_CITIES='nyc,atlantis': expected a comma-separated subset of "),
        m("heal", env={"MLTRAIN_STORAGE_URI": "ftp://x"},
          says="mltrain settings are not usable: MLTRAIN_STORAGE_URI='ftp://x': expected file:///absolute/path"),
        m("report", env={"MLTRAIN_PARTITIONS_START": "March"},
          says="MLTRAIN_PARTITIONS_START='March': expected a date, YYYY-MM-DD"),
        m("init", env={"MLTRAIN_POOL_LIMITS": '{"registry": "one"}'},
          says="""MLTRAIN_POOL_LIMITS='{"registry": "one"}': expected a JSON object of pool: slots"""),
    ]  # fmt: skip


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS and not k.startswith("MLTRAIN_")}
    return {**env, "MLTRAIN_HOME": str(home), **extra}


def _snapshot(home: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under the home (DAGSTER_HOME is inside it) with its size and modification time."""
    return {str(p.relative_to(home)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(home.rglob("*"))}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A home a person has used: a landed day, written by the CLI itself."""
    home = tmp_path_factory.mktemp("mistakes") / "mltrain"
    landed = subprocess.run(
        [*MLTRAIN, "simulate", "--dataset", "rides", "--start", DAY, "--rides-per-day", "200", "--cities", "nyc"],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert landed.returncode == 0, landed.stdout + landed.stderr
    return home


def test_each_mistake_is_one_line_exit_2_no_traceback_and_nothing_written(home):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    mistakes = _mistakes(port_in_use=listener.getsockname()[1], nothing_there=free_port())
    assert len({m.argv[0] for m in mistakes}) >= 13 and len(mistakes) >= 30
    before = _snapshot(home)

    def run(mistake: Mistake) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*MLTRAIN, *mistake.argv], env=_env(home, **mistake.env), capture_output=True, text=True, timeout=120
        )

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(run, mistakes))
    finally:
        listener.close()

    failures = []
    for mistake, done in zip(mistakes, results, strict=True):
        line = done.stderr.rstrip("\n")
        problems = [
            f"exit {done.returncode}" if done.returncode != 2 else "",
            "a traceback" if "Traceback" in done.stdout + done.stderr else "",
            "more than one line" if "\n" in line else "",
            f"not {mistake.prefix!r}..." if not line.startswith(mistake.prefix) else "",
            f"does not say {mistake.says!r}" if mistake.says not in line else "",
            f"printed {done.stdout!r}" if done.stdout else "",
        ]
        if any(problems):
            failures.append(f"mltrain {' '.join(mistake.argv)}: {'; '.join(p for p in problems if p)}\n{done.stderr}")
    assert not failures, "\n".join(failures)
    assert _snapshot(home) == before, "a refused command changed the home"
