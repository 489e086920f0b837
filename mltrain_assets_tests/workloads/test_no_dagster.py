"""The data plane imports no ``dagster`` (only ``dagster_pipes``): pods install the workloads without it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import importlib, json, pkgutil, sys, traceback
import mltrain_assets.workloads as root

failed = {}
def onerror(name):
    failed[name] = traceback.format_exc(limit=1)

modules = [root.__name__]
for info in pkgutil.walk_packages(root.__path__, root.__name__ + ".", onerror=onerror):
    modules.append(info.name)
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
    assert "mltrain_assets.workloads.demand.features" in probe["modules"]
    assert "mltrain_assets.workloads.ingest.workload" in probe["modules"]
    assert probe["failed"] == {}, "\n".join(f"{name}: {error}" for name, error in probe["failed"].items())
    assert probe["dagster"] == [], f"dagster imported by the data plane: {probe['dagster'][:5]}"
