"""The local stack behind ``make dev`` and the end-to-end tests: Dagster webserver + daemon, MLflow UI.

Each service runs in its own session on 127.0.0.1 (``cli/services.py``); the stack stops them all,
with whatever they started (the daemon's code servers and run workers), on exit and on SIGINT,
SIGTERM or SIGHUP: SIGTERM to each session's process group, up to 20 s, then SIGKILL (at once on a
second signal). Logs go to ``$MLTRAIN_HOME/logs``. Before starting, runs left STARTED by a stack
that was killed (its code server died with their run workers, so nobody failed them) are failed
and their pool slots freed (``instance.heal``). With ``MLTRAIN_SPARK_CONNECT=local`` a Spark Connect server
(``cli/sparkconnect.py``) starts first and the stack's runs reach it (``MLTRAIN_SPARK_MASTER=sc://...``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from mltrain_assets.cli.demo import ensure_instance, init_pools
from mltrain_assets.cli.services import Services
from mltrain_assets.instance.heal import heal
from mltrain_assets.instance.origin import REPO_ROOT, WORKSPACE_FILE

if TYPE_CHECKING:
    from mltrain_assets.cli.sparkconnect import LocalSparkConnectServer

BIN = Path(sys.executable).parent


@dataclass
class Service:
    name: str
    command: list[str]
    health_url: str
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def started(self) -> subprocess.Popen:
        """Its process (``DevStack.start`` starts every service before anything polls one)."""
        if self.process is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.process


@dataclass
class DevStack:
    dagster_port: int = 3000
    mlflow_port: int = 5000
    daemon: bool = True
    mlflow_ui: bool = True
    webserver: bool = True
    workspace: Path = WORKSPACE_FILE  # the code locations the webserver and the daemon load
    services: list[Service] = field(default_factory=list)
    running: Services | None = field(default=None, repr=False)  # the sessions started, and the signal handlers
    # MLTRAIN_SPARK_CONNECT=local: a Spark Connect server the stack's runs reach (MLTRAIN_SPARK_MASTER=sc://...).
    spark_connect: LocalSparkConnectServer | None = field(default=None, repr=False)
    spark_url: str = ""

    @property
    def dagster_url(self) -> str:
        return f"http://127.0.0.1:{self.dagster_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def link_settings(self) -> dict[str, str]:
        """The UI addresses this stack serves, for the links between Dagster and MLflow its runs record."""
        settings = {"MLTRAIN_DAGSTER_UI_URL": self.dagster_url}
        if self.mlflow_ui:
            settings["MLTRAIN_MLFLOW_UI_URL"] = self.mlflow_url
        return settings

    def plan(self) -> list[Service]:
        env = os.environ
        workspace = str(self.workspace)
        services = []
        if self.webserver:
            services.append(
                Service(
                    "dagster-webserver",
                    [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.dagster_port), "-w", workspace],
                    f"{self.dagster_url}/server_info",
                )
            )
        if self.daemon:
            services.append(Service("dagster-daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace], ""))
        if self.mlflow_ui:
            services.append(
                Service(
                    "mlflow",
                    [
                        str(BIN / "mlflow"),
                        "server",
                        "--backend-store-uri",
                        env["MLFLOW_TRACKING_URI"],
                        "--default-artifact-root",
                        env["MLTRAIN_MLFLOW_ARTIFACTS_URI"],
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(self.mlflow_port),
                        "--workers",
                        "1",
                    ],
                    f"{self.mlflow_url}/health",
                )
            )
        return services

    def start(self, timeout_s: float = 120) -> DevStack:
        self.running = Services("mltrain dev")
        self.running.handle_signals()  # from here on a SIGTERM or SIGHUP stops what has started, as Ctrl-C does
        try:
            instance = ensure_instance()
            init_pools(instance)  # before the daemon launches anything: pool limits are never written by a run
            heal(instance, by="mltrain dev (start)", say=lambda line: print(f"heal: {line}", file=sys.stderr))
            logs = Path(os.environ["MLTRAIN_HOME"]) / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            env = {
                **os.environ,
                **self.link_settings(),
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                "PYTHONUNBUFFERED": "1",
            }
            if os.environ.get("MLTRAIN_SPARK_CONNECT") == "local":
                from mltrain_assets.cli.sparkconnect import LocalSparkConnectServer  # imports pyspark: only here

                master = os.environ.get("MLTRAIN_SPARK_MASTER", "local[*]")
                self.spark_connect = LocalSparkConnectServer(logs / "spark", master=master)
                self.spark_url = env["MLTRAIN_SPARK_MASTER"] = self.spark_connect.__enter__()
            self.services = self.plan()
            for service in self.services:
                service.log_path = logs / f"{service.name}.log"
                with service.log_path.open("ab") as log:
                    service.process = self.running.start(
                        service.command, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
                    )
            self._wait_healthy(timeout_s)
        except BaseException:  # a stop signal (StopSignal is a KeyboardInterrupt) as well as a failure
            self.stop()
            raise
        return self

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = [s for s in self.services if s.health_url]
        while pending:
            for service in list(pending):
                if service.started.poll() is not None:
                    raise RuntimeError(f"{service.name} exited ({service.started.returncode}); see {service.log_path}")
                try:
                    if requests.get(service.health_url, timeout=2).ok:
                        pending.remove(service)
                except requests.RequestException:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"not healthy after {timeout_s:.0f}s: {[s.name for s in pending]}")
            time.sleep(0.5)

    def stop(self, grace_s: float = 20) -> None:
        """Every service and what it started: SIGTERM, up to ``grace_s``, then SIGKILL (at once on a stop signal)."""
        if self.running is not None:
            self.running.stop(grace_s)
        if self.spark_connect is not None:
            self.spark_connect.__exit__()

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
