"""Training and registration against a real MLflow tracking server (artifacts proxied by the server).

One server per module; tests use their own model names. Faults are injected by a small HTTP proxy
in front of it (``FaultyProxy``): the search endpoint answering 503, or a create whose answer is
lost after the server committed it (the client then retries the POST).
"""

import http.client
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from mltrain_assets.artifacts import version_uri
from mltrain_assets.pipelines.demand.workloads.features import build_features
from mltrain_assets.pipelines.demand.workloads.forecast import forecast_city
from mltrain_assets.pipelines.demand.workloads.train import train_city
from mltrain_assets.resources.registry_errors import RegistryUnavailable
from mltrain_assets.resources.tracking import LINEAGE_KEY_TAG, ModelRegistry, lineage_tags
from mltrain_assets_tests.conftest import free_port
from mltrain_assets_tests.services.conftest import aggregated_window

pytestmark = pytest.mark.services
DATE = "2026-05-20"


@pytest.fixture(scope="module")
def mlflow_server_process(tmp_path_factory):
    """One real `mlflow server` (1 worker, no job runner) for the module: ``(url, artifacts folder)``."""
    tmp_path = tmp_path_factory.mktemp("mlflow-server")
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
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
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
        yield url, tmp_path / "server-artifacts"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def mlflow_server(mlflow_server_process, monkeypatch):
    url, artifacts = mlflow_server_process
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)  # env only: mlflow.set_tracking_uri would outlive the test
    return url, artifacts


class FaultyProxy:
    """An HTTP proxy to the real server that can answer 503 for, or lose the answer to, chosen endpoints.

    ``faults``: ``{path prefix: "503" | "drop-once"}``; ``requests``: every ``(method, path)`` seen.
    "drop-once" forwards the first matching request, lets the server commit it, then closes the
    connection without answering (as a proxy or network failing at that moment would).
    """

    def __init__(self, upstream: str):
        self.upstream = upstream.removeprefix("http://")
        self.faults: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                path = self.path.split("?", 1)[0]
                proxy.requests.append((self.command, path))
                fault = next((f for prefix, f in proxy.faults.items() if path.startswith(prefix)), None)
                if fault == "503":
                    body = b"<html>503 Service Unavailable</html>"
                    self.send_response(503)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                if fault == "drop-once":
                    proxy.faults = {k: v for k, v in proxy.faults.items() if v != "drop-once"}
                    self.close_connection = True
                    return  # committed upstream, no answer here
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def small_retry_budget(monkeypatch):
    """MLflow's own client retries, small: 3 attempts, sleeping 0 then 2 s (the defaults sleep ~30 s)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


SOURCE = "s3://mltrain/storage/city_demand_model/nyc/2026-05-20/v=0123456789ab/model"


def _lineage_versions(url: str, name: str, lineage: str) -> list[str]:
    found = MlflowClient(url).search_model_versions(f"name = '{name}' and tags.`{LINEAGE_KEY_TAG}` = '{lineage}'")
    return sorted(str(v.version) for v in found)


def test_a_search_answering_503_fails_registration_registers_nothing_and_a_retry_registers_once(
    mlflow_server, small_retry_budget
):
    url, _ = mlflow_server
    name = "svc-search-503"
    with FaultyProxy(url) as proxy:
        proxy.faults["/api/2.0/mlflow/model-versions/search"] = "503"
        registry = ModelRegistry(tracking_uri=proxy.url)
        start = time.monotonic()
        with pytest.raises(RegistryUnavailable) as failed:
            registry.register(name, SOURCE, None, "lineage-503", {"a": "b"})
        elapsed = time.monotonic() - start
        message = str(failed.value)
        assert message.startswith(f"MLflow tracking server {proxy.url} unreachable after 3 attempts over ")
        assert "HTTP 503" in message and failed.value.allow_retries is False
        assert elapsed < 15, elapsed
        # MLflow's own client did the retrying (3 attempts), and nothing else was asked of the server.
        assert proxy.requests == [("GET", "/api/2.0/mlflow/model-versions/search")] * 3
        assert MlflowClient(url).search_registered_models(f"name = '{name}'") == []

        proxy.faults.clear()  # the service is back: the retried step registers the lineage once
        first = ModelRegistry(tracking_uri=proxy.url).register(name, SOURCE, None, "lineage-503", {"a": "b"})
        again = ModelRegistry(tracking_uri=proxy.url).register(name, SOURCE, None, "lineage-503", {"a": "b"})
    assert first.created and not again.created and again.version == first.version
    assert _lineage_versions(url, name, "lineage-503") == [first.version]


def test_a_create_whose_answer_was_lost_and_retried_by_the_client_leaves_one_version(mlflow_server):
    url, _ = mlflow_server
    name = "svc-lost-answer"
    with FaultyProxy(url) as proxy:
        proxy.faults["/api/2.0/mlflow/model-versions/create"] = "drop-once"
        registered = ModelRegistry(tracking_uri=proxy.url).register(name, SOURCE, None, "lineage-lost", {"a": "b"})
        creates = [r for r in proxy.requests if r[1] == "/api/2.0/mlflow/model-versions/create"]
    assert len(creates) == 2, "the client retried the create whose answer it never got"
    # The server holds one version for the lineage: the first, which the retried create duplicated.
    assert _lineage_versions(url, name, "lineage-lost") == [registered.version] == ["1"]


def test_the_same_lineage_registered_from_two_threads_at_once_gives_one_version(mlflow_server, monkeypatch):
    url, _ = mlflow_server
    name = "svc-two-at-once"
    both_looked = threading.Barrier(2, timeout=60)
    lookup = ModelRegistry.find_version
    looked = threading.local()

    def find_then_wait(self, model, lineage):
        found = lookup(self, model, lineage)
        if not getattr(looked, "once", False):  # both threads pass the "not registered yet" check first
            looked.once = True
            both_looked.wait()
        return found

    monkeypatch.setattr(ModelRegistry, "find_version", find_then_wait)
    results, errors = [], []

    def register():
        try:
            results.append(ModelRegistry(tracking_uri=url).register(name, SOURCE, None, "lineage-race", {"a": "b"}))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=register) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(results) == 2 and results[0].version == results[1].version
    assert sorted(r.created for r in results) == [False, True]
    assert _lineage_versions(url, name, "lineage-race") == [results[0].version]


def test_train_register_alias_and_serve_through_the_server(mltrain_home, mlflow_server):
    url, artifacts = mlflow_server
    storage = f"file://{mltrain_home}/storage"
    aggregates = aggregated_window(f"file://{mltrain_home}/landing", storage, DATE)
    features_uri = version_uri(storage, "city_demand_features", DATE, "test")
    build_features(aggregates, DATE, features_uri, engine="duckdb", check_parity_on_other_engine=False)

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
