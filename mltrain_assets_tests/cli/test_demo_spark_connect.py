"""`MLTRAIN_SPARK_CONNECT=local mltrain demo`: the demo's Spark steps run as clients of a Connect server it starts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mltrain_assets.launch.local_objects import processes_with

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]


def _summaries(storage: Path, asset: str) -> list[dict]:
    return [json.loads(m.read_text())["summary"] for m in sorted(storage.glob(f"{asset}/*/v=*/_MANIFEST.json"))]


def test_the_demand_demo_runs_its_spark_steps_through_a_connect_server_it_starts_and_stops(mltrain_home):
    env = {**os.environ, "MLTRAIN_SPARK_CONNECT": "local", "MLTRAIN_CITIES": "nyc"}
    done = subprocess.run(
        [sys.executable, "-m", "mltrain_assets.cli", "demo", "--pipeline", "demand", "--rides-per-day", "8000"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,  # under the suite timeout (900 s); a loaded 2-core machine took 555 s
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-4000:]
    found = re.search(r"Spark Connect server at (sc://127\.0\.0\.1:\d+) \(its log: ", said)
    assert found, said[-4000:]
    url = found.group(1)
    storage = mltrain_home / "storage"
    aggregates, features = _summaries(storage, "city_hour_aggregates"), _summaries(storage, "city_demand_features")
    assert len(aggregates) == 35 and len(features) == 1
    for summary in [*aggregates, *features]:
        assert (summary["engine"], summary["spark_master"], summary["spark_connect"]) == ("spark", url, True)
        assert summary["engine_parity"]["checked"] and summary["engine_parity"]["cells_differing"] == 0
    assert processes_with(f"SPARK_LOG_DIR={mltrain_home / 'logs' / 'spark'}") == []  # stopped with the demo
