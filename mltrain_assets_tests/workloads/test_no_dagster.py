"""The data plane imports no ``dagster`` (only ``dagster_pipes``): pods install the workloads without it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import importlib, json, pkgutil, sys, traceback

failed = {}
def onerror(name):
    failed[name] = traceback.format_exc(limit=1)

# The shared data plane, and each pipeline's data plane: its workloads and the dagster-free modules they read.
modules = []
for root_name in ("mltrain_assets.workloads", "mltrain_assets.pipelines.demand.workloads", "mltrain_assets.pipelines.recsys.workloads"):
    root = importlib.import_module(root_name)
    modules.append(root_name)
    for info in pkgutil.walk_packages(root.__path__, root_name + ".", onerror=onerror):
        modules.append(info.name)
for pipeline in ("demand", "recsys"):
    modules += [f"mltrain_assets.pipelines.{pipeline}.{part}" for part in ("contract", "params", "simulate", "spec")]
for name in modules:
    try:
        importlib.import_module(name)
    except Exception:
        failed[name] = traceback.format_exc(limit=1)
dagster = sorted(m for m in sys.modules if m == "dagster" or m.startswith("dagster."))
print(json.dumps({"modules": modules, "failed": failed, "dagster": dagster}))
"""


def test_no_workload_module_imports_dagster():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert "mltrain_assets.pipelines.demand.workloads.features" in probe["modules"]
    assert "mltrain_assets.workloads.ingest.workload" in probe["modules"]
    assert probe["failed"] == {}, "\n".join(f"{name}: {error}" for name, error in probe["failed"].items())
    assert probe["dagster"] == [], f"dagster imported by the data plane: {probe['dagster'][:5]}"
