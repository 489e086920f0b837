"""Spark workloads as Spark Connect clients (``sc://``) of a real local server: same results, no JVM, named failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import Failure

from mltrain_assets.artifacts import read_manifest, version_uri
from mltrain_assets.cli.sparkconnect import LocalSparkConnectServer
from mltrain_assets.launch import LaunchResult
from mltrain_assets.launch.local_objects import processes_with
from mltrain_assets.loopback import free_port
from mltrain_assets.pipelines.demand.params import FeaturesParams
from mltrain_assets.pipelines.demand.workloads import features
from mltrain_assets.resources.workload_result import reported
from mltrain_assets.workloads.common import runtime
from mltrain_assets.workloads.common.runtime import EXIT_SERVICE_UNAVAILABLE
from mltrain_assets.workloads.common.spark import SparkSettings
from mltrain_assets.workloads.common.spark_connect import SparkConnectUnreachable, connect_address, server_url
from mltrain_assets_tests.services.conftest import aggregated_window

pytestmark = pytest.mark.services
DATE = "2026-05-20"
REPO_ROOT = Path(__file__).resolve().parents[3]
# Runs the features workload as its pod would (its main), watching this process's descendants for a JVM
# meanwhile; prints the exit code and what it saw. Classic and Connect sessions cannot share one process.
WORKLOAD = """
import json, os, sys, threading
from pathlib import Path
from mltrain_assets.pipelines.demand.workloads.features import main

def descendants(pid):
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *descendants(int(child))]
    return found

seen, done = set(), threading.Event()
def watch():
    while not done.is_set():
        for pid in descendants(os.getpid()):
            try:
                seen.add(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\\0")[0].decode())
            except OSError:
                pass
        done.wait(0.1)
threading.Thread(target=watch, daemon=True).start()
code = main(sys.argv[1:])
done.set()
from pyspark import SparkContext
print(json.dumps({"code": code, "children": sorted(seen), "gateway": SparkContext._gateway is not None}))
"""


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory):
    with LocalSparkConnectServer(tmp_path_factory.mktemp("spark-connect"), master="local[2]", memory="1g") as url:
        yield url


@pytest.fixture(scope="module")
def window(tmp_path_factory):
    """35 days of committed city_hour_aggregates (one city) the features of DATE read; built once (~30 s)."""
    home = tmp_path_factory.mktemp("mltrain")
    storage = f"file://{home}/storage"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLTRAIN_HOME", str(home))
        env.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        yield storage, aggregated_window(f"file://{home}/landing", storage, DATE, volume=8_000)


def _params(storage: str, aggregates: list[str], master: str, tag: str) -> FeaturesParams:
    out = version_uri(storage, "city_demand_features", DATE, tag)
    return FeaturesParams(date=DATE, aggregates_uris=tuple(aggregates), spark=SparkSettings(master=master), out_uri=out)


def _run(params: FeaturesParams, log: Path) -> dict:
    """The workload in a process of its own; its report, and its stderr in ``log``."""
    with log.open("w") as err:
        done = subprocess.run(
            [sys.executable, "-c", WORKLOAD, *params.argv()],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    assert done.returncode == 0, log.read_text()[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_features_through_spark_connect_pass_the_parity_gate_with_no_jvm_in_the_workload(
    window, connect_server, tmp_path
):
    storage, aggregates = window
    params = _params(storage, aggregates, connect_server, "connect")
    seen = _run(params, tmp_path / "workload.log")
    assert seen["code"] == 0, (tmp_path / "workload.log").read_text()[-3000:]
    assert not seen["gateway"] and not [c for c in seen["children"] if "java" in c], seen
    summary = read_manifest(params.out_uri)["summary"]
    assert summary["engine"] == "spark" and summary["spark_connect"] is True
    assert summary["spark_master"] == connect_server
    parity = summary["engine_parity"]  # what the engine_parity gate reads: Connect's result against DuckDB's
    assert parity["checked"] and parity["engines"] == ["spark", "duckdb"], parity
    assert parity["cells_compared"] > 1000 and parity["cells_differing"] == 0, parity


def test_an_unreachable_server_fails_the_workload_once_naming_it_and_the_step_may_retry(
    window, tmp_path, monkeypatch, capsys
):
    storage, aggregates = window
    url = f"sc://127.0.0.1:{free_port()}"  # nobody listens
    reports: list[dict] = []
    monkeypatch.setattr(runtime.Reporter, "report", lambda self, summary: reports.append(summary))
    start = time.monotonic()
    code = features.main(_params(storage, aggregates, url, "unreachable").argv())
    assert time.monotonic() - start < 15
    assert code == EXIT_SERVICE_UNAVAILABLE
    expected = f"Spark Connect server {url} is not reachable (connection refused) after 4 attempts over "
    assert f"SERVICE INTERRUPTED: {expected}" in capsys.readouterr().err
    assert reports and reports[0]["service_interrupted"].startswith(expected)
    with pytest.raises(Failure) as failed:  # what the step gets from it: a failure its retry policy retries
        reported(None, "city_demand_features", LaunchResult(returncodes=[code]), reports, time.monotonic())  # type: ignore[arg-type]
    assert failed.value.allow_retries is True
    assert failed.value.description.startswith(f"city_demand_features: {expected}")


def test_a_server_restarted_mid_run_fails_the_workload_naming_it_and_a_retry_passes(window, tmp_path):
    storage, aggregates = window
    logs = tmp_path / "spark-connect"
    port = free_port()
    params = _params(storage, aggregates, f"sc://127.0.0.1:{port}", "restarted")
    server = LocalSparkConnectServer(logs, master="local[2]", port=port, memory="1g")
    url = server.__enter__()
    try:
        with (tmp_path / "first.log").open("w") as err:
            first = subprocess.Popen(
                [sys.executable, "-c", WORKLOAD, *params.argv()], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=err
            )
        deadline = time.monotonic() + 60
        while "city_hour_aggregates versions, engine spark" not in (tmp_path / "first.log").read_text():
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()
            time.sleep(0.2)
        time.sleep(2)  # into its session: the plan is on the server
        os.killpg(server.process.pid, signal.SIGKILL)  # type: ignore[union-attr]  # a crash, not a stop
        server.__exit__()
        assert processes_with(f"SPARK_LOG_DIR={logs}") == []  # nothing of the server is left
        out, _ = first.communicate(timeout=120)
        said = (tmp_path / "first.log").read_text()
        assert json.loads(out.strip().splitlines()[-1])["code"] == EXIT_SERVICE_UNAVAILABLE, said[-3000:]
        assert f"SERVICE INTERRUPTED: Spark Connect server {url} " in said, said[-3000:]
        assert read_manifest(params.out_uri) is None  # nothing committed
        with LocalSparkConnectServer(logs, master="local[2]", port=port, memory="1g"):  # the server is back
            assert _run(params, tmp_path / "retry.log")["code"] == 0  # the step's retry
        assert read_manifest(params.out_uri)["summary"]["spark_master"] == url
    finally:
        server.__exit__()
    assert processes_with(f"SPARK_LOG_DIR={logs}") == []


def test_connect_urls_are_named_without_their_parameters():
    assert connect_address("sc://spark-connect:15003/;token=abc;use_ssl=true") == ("spark-connect", 15003)
    assert server_url("sc://spark-connect/;token=abc") == "sc://spark-connect:15002"
    error = SparkConnectUnreachable("sc://h:1", "is not reachable (connection refused) after 4 attempts over 3 s")
    assert str(error) == "Spark Connect server sc://h:1 is not reachable (connection refused) after 4 attempts over 3 s"


def test_an_already_named_unreachable_server_is_not_relabelled_as_lost_mid_query(monkeypatch):
    from mltrain_assets.workloads.common import spark_connect

    # This process had a session on another server already: a later reachability failure keeps its own words.
    monkeypatch.setattr(spark_connect, "_opened", ["sc://127.0.0.1:15002"])
    refused = SparkConnectUnreachable("sc://127.0.0.1:15003", "is not reachable (connection refused) after 4 attempts")
    assert spark_connect.connect_failure(refused) is refused
    wrapped = RuntimeError("query failed")
    wrapped.__cause__ = refused
    assert spark_connect.connect_failure(wrapped) is refused
    assert str(refused) == (
        "Spark Connect server sc://127.0.0.1:15003 is not reachable (connection refused) after 4 attempts"
    )
