"""Shared fixtures: an isolated MLTRAIN_HOME per test, and real local services started on demand."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mltrain_assets.loopback import free_port, wait_for_port

SETTINGS = (
    "MLTRAIN_HOME",
    "MLTRAIN_LANDING_URI",
    "MLTRAIN_STORAGE_URI",
    "MLFLOW_TRACKING_URI",
    "MLTRAIN_MLFLOW_ARTIFACTS_URI",
    "MLTRAIN_COMPUTE",
    "MLTRAIN_SPARK_MASTER",
    "MLTRAIN_SQL_ENGINE",
    "MLTRAIN_ENGINE_PARITY",
    "MLTRAIN_AUTOMATION_LOOKBACK_DAYS",
    "MLTRAIN_LANDING_SENSOR_INTERVAL_S",
    "MLTRAIN_CITIES",
    "DAGSTER_HOME",
    "MLTRAIN_MLFLOW_UI_URL",
    "MLTRAIN_DAGSTER_UI_URL",
)


def package_of(nodeid: str) -> str:
    """The unit one xdist worker runs whole: a test folder (two levels deep), or a top-level module."""
    path = nodeid.split("::", 1)[0].removeprefix("mltrain_assets_tests/")
    folders = path.split("/")[:-1]
    # A pipeline's workload tests are a package of their own: the slowest, they balance the two workers.
    depth = 3 if folders[:1] == ["pipelines"] and folders[2:3] == ["workloads"] else 2
    return "/".join(folders[:depth]) if folders else path


# The packages that keep a worker longest, longest first (BENCHMARKS.md, "Test suite"). The rest
# follow by number of tests. Longest first, so the workers end together: xdist's own order (most
# tests first) started the e2e package (few tests, ~7 minutes, mostly waiting on the daemon) last,
# alone on one worker after the others had run out of work.
LONGEST_PACKAGES = (
    "e2e",
    "pipelines/demand",
    "cli",
    "pipelines/recsys/workloads",
    "workloads/common",
    "services",
    "core",
    "pipelines/demand/workloads",
)


def package_rank(package: str) -> int:
    return LONGEST_PACKAGES.index(package) if package in LONGEST_PACKAGES else len(LONGEST_PACKAGES)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``make test`` runs ``pytest -n 2``: one worker per test package, so a package's shared fixtures (the
    e2e stack, the simulated worlds) are built once; xdist's own ``loadgroup`` cannot regroup on pytest 9.
    Packages are handed out longest first (``LONGEST_PACKAGES``)."""
    from xdist.scheduler import LoadScopeScheduling

    class PackageScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return package_of(nodeid)

        def _assign_work_unit(self, node) -> None:
            # The work queue is complete before the first unit is handed out; order it once, stably.
            if not getattr(self, "_longest_first", False):
                ordered = sorted(self.workqueue.items(), key=lambda unit: package_rank(unit[0]))
                self.workqueue.clear()
                self.workqueue.update(ordered)
                self._longest_first = True
            super()._assign_work_unit(node)

    return PackageScheduling(config, log)


@pytest.fixture
def mltrain_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh MLTRAIN_HOME with every setting at its embedded default under it."""
    from mltrain_assets.settings import apply_defaults

    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "mltrain"
    monkeypatch.setenv("MLTRAIN_HOME", str(home))
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    for name, value in apply_defaults().items():
        monkeypatch.setenv(name, value)
    return home


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API (moto's server mode) on 127.0.0.1, with a bucket ``mltrain``."""
    import boto3

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        saved = {k: os.environ.get(k) for k in [*creds, "AWS_ENDPOINT_URL"]}
        os.environ.update({**creds, "AWS_ENDPOINT_URL": endpoint})
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="mltrain")
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
