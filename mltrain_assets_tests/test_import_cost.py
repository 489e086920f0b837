"""Loading the definitions imports no data-plane or integration heavyweight.

Every run worker imports ``mltrain_assets.definitions`` before its first step (and the webserver,
the daemon and each code server once), so a heavy import there is paid per launch. The libraries
below are imported where they are used: MLflow by the registry's calls, the Kubernetes client when
a k8s backend renders or launches, matplotlib when a report is drawn, the ML and Spark libraries in
the workloads' own processes. Timings live in bench/control_plane_overhead.py, never here.
"""

import json
import os
import subprocess
import sys

import pytest

LAZY = (
    "mlflow",
    "pyspark",
    "kubernetes",
    "dagster_k8s",
    "torch",
    "matplotlib",
    "lightgbm",
    "sklearn",
)


@pytest.fixture(scope="module")
def modules_after_import(tmp_path_factory) -> set[str]:
    home = tmp_path_factory.mktemp("import-cost")
    env = {**os.environ, "MLTRAIN_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    script = "import json, sys; import mltrain_assets.definitions; print(json.dumps(sorted(sys.modules)))"
    # A fresh interpreter: the test session itself has imported most of these already.
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("package", LAZY)
def test_definitions_do_not_import(modules_after_import, package):
    imported = sorted(m for m in modules_after_import if m == package or m.startswith(f"{package}."))
    assert not imported, f"importing mltrain_assets.definitions imported {package}: {imported[:5]}"
