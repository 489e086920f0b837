"""Training and registration against a real MLflow tracking server (artifacts proxied by the server)."""

import subprocess
import sys
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from mltrain_assets.artifacts import version_uri
from mltrain_assets.resources.tracking import ModelRegistry, lineage_tags
from mltrain_assets.workloads.demand.features import build_features
from mltrain_assets.workloads.demand.forecast import forecast_city
from mltrain_assets.workloads.demand.train import train_city
from mltrain_assets_tests.conftest import free_port
from mltrain_assets_tests.services.conftest import ingested_window

pytestmark = pytest.mark.services
DATE = "2026-05-20"


@pytest.fixture
def mlflow_server(tmp_path, monkeypatch):
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{tmp_path}/server.db",
        "--artifacts-destination",
        f"{tmp_path}/server-artifacts",
    ]
    process = subprocess.Popen(
        command,
        env={**__import__("os").environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import time

        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert process.poll() is None, "mlflow server exited"
            assert time.monotonic() < deadline, "mlflow server not healthy after 90 s"
            time.sleep(0.5)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)  # env only: mlflow.set_tracking_uri would outlive the test
        yield url, tmp_path / "server-artifacts"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_train_register_alias_and_serve_through_the_server(mltrain_home, mlflow_server):
    url, artifacts = mlflow_server
    storage = f"file://{mltrain_home}/storage"
    rides = ingested_window(f"file://{mltrain_home}/landing", storage, DATE)
    features_uri = version_uri(storage, "city_demand_features", DATE, "test")
    build_features(rides, DATE, features_uri, engine="duckdb")

    model_uri = version_uri(storage, "city_demand_model", f"nyc/{DATE}", "test")
    summary = train_city(features_uri, "nyc", DATE, model_uri)
    assert summary["mlflow_run_id"]
    run = MlflowClient(url).get_run(summary["mlflow_run_id"])
    assert run.data.metrics["mape"] == pytest.approx(summary["mape"])
    assert any(artifacts.rglob("MLmodel")), "the server stored the model artifacts"

    registry = ModelRegistry(tracking_uri=url)
    tags = lineage_tags(
        code_commit_sha="abc1234", data_snapshot={"features": features_uri}, run_id="r1", partition=f"nyc|{DATE}"
    )
    first = registry.register(
        "demand-forecast-nyc", summary["mlflow_model_uri"], summary["mlflow_run_id"], "lineage-1", tags
    )
    again = registry.register(
        "demand-forecast-nyc", summary["mlflow_model_uri"], summary["mlflow_run_id"], "lineage-1", tags
    )
    assert first.created and not again.created and again.version == first.version
    registry.set_alias("demand-forecast-nyc", "staging", first.version)
    assert registry.alias_version("demand-forecast-nyc", "staging") == first.version
    assert registry.version_tags("demand-forecast-nyc", first.version)["mltrain.partition"] == f"nyc|{DATE}"
    assert registry.run_link(summary["mlflow_run_id"]).startswith(f"{url}/#/experiments/")

    out = version_uri(storage, "demand_forecasts", f"nyc/{DATE}", "test")
    result = forecast_city("models:/demand-forecast-nyc@staging", features_uri, "nyc", DATE, out)
    assert result["rows"] == 24
