"""``mltrain_assets.launch`` imports no dagster: ``mltrain reproduce``, the guard process and tests use it bare."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import importlib, json, pkgutil, sys
import mltrain_assets.launch as root
for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
    importlib.import_module(info.name)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("dagster", "dagster_k8s", "kubernetes", "pyspark", "torch"))
print(json.dumps({"modules": sorted(m for m in sys.modules if m.startswith("mltrain_assets.launch")), "heavy": heavy}))
"""


def test_the_launch_package_imports_no_dagster():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    assert (
        "mltrain_assets.launch.supervisor" in probe["modules"]
        and "mltrain_assets.launch.kubernetes" in probe["modules"]
    )
    assert probe["heavy"] == [], f"imported by mltrain_assets.launch: {probe['heavy'][:5]}"
