"""A moved or copied MLTRAIN_HOME keeps working: MLflow's absolute artifact locations follow it."""

import os
import shutil
import subprocess
import sys

from mltrain_assets.relocate import HOME_MARKER, relocate_mlflow

# Registers a model in the home's MLflow store, or (with "load") loads it back by its registry name.
MLFLOW_SCRIPT = r"""
import os, sys
from mltrain_assets.settings import apply_defaults
apply_defaults()
import mlflow, mlflow.pyfunc
from mltrain_assets.workloads.common.tracking import ensure_experiment
if sys.argv[1] == "register":
    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input
    ensure_experiment("relocation")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=Echo())
    mlflow.register_model(info.model_uri, "relocated")
else:
    model = mlflow.pyfunc.load_model("models:/relocated/1")
    print("loaded", type(model).__name__)
"""


def _mlflow(home, action: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLTRAIN_", "MLFLOW_", "DAGSTER_"))}
    env["MLTRAIN_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-c", MLFLOW_SCRIPT, action], env=env, capture_output=True, text=True, timeout=300
    )


def test_a_registered_model_loads_from_a_copied_home_without_the_original(tmp_path):
    original = tmp_path / "original"
    registered = _mlflow(original, "register")
    assert registered.returncode == 0, registered.stderr[-2000:]
    assert (original / HOME_MARKER).exists()

    moved = tmp_path / "elsewhere"
    shutil.copytree(original, moved)  # a copy (a move is the same, without the original left behind)
    shutil.rmtree(original / "mlartifacts")  # the copy must not lean on the original's files
    loaded = _mlflow(moved, "load")
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert "loaded PyFuncModel" in loaded.stdout
    assert f"MLTRAIN_HOME moved from {original} to {moved}" in loaded.stderr
    again = _mlflow(moved, "load")
    assert again.returncode == 0 and "moved from" not in again.stderr  # relocated once


def test_relocation_rewrites_only_locations_under_the_old_root(tmp_path):
    import sqlalchemy

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    engine = sqlalchemy.create_engine(uri)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("CREATE TABLE experiments (artifact_location TEXT)"))
        for location in ("s3://old/mlartifacts/e", "s3://old/mlartifacts", "s3://old/mlartifacts-2/x", "file:///x"):
            connection.execute(sqlalchemy.text("INSERT INTO experiments VALUES (:l)"), {"l": location})
    assert relocate_mlflow(uri, "s3://old/mlartifacts", "s3://new/artifacts") == 2
    with engine.connect() as connection:
        rows = [r[0] for r in connection.execute(sqlalchemy.text("SELECT artifact_location FROM experiments"))]
    engine.dispose()
    assert rows == ["s3://new/artifacts/e", "s3://new/artifacts", "s3://old/mlartifacts-2/x", "file:///x"]
