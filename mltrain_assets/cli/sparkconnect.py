"""A Spark Connect server on 127.0.0.1: one long-lived Spark that every Spark workload reaches as a client.

It runs what pyspark's ``sbin/start-connect-server.sh --wait`` runs (``spark-submit --class
org.apache.spark.sql.connect.service.SparkConnectServer``; the Connect jar ships in pyspark's
``jars/``), but in a session of our own (``cli/services.py``) instead of ``spark-daemon.sh``'s nohup:
leaving the ``with`` block, or a SIGINT, SIGTERM or SIGHUP meanwhile, stops it and its executors
(SIGTERM, up to 20 s, then SIGKILL; at once on a second signal). Started by ``mltrain demo`` and
``mltrain dev`` with ``MLTRAIN_SPARK_CONNECT=local``; its master is ``local[N]`` here or the standalone
cluster in k8s-local mode. Its log: ``<log_dir>/spark-connect.log``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pyspark

from mltrain_assets.cli.services import Services
from mltrain_assets.loopback import free_port

SPARK_SUBMIT = Path(pyspark.__file__).parent / "bin" / "spark-submit"
SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"  # what start-connect-server.sh submits
STARTED_LINE = "Spark Connect server started at"


def server_command(master: str, port: int, memory: str, conf: dict[str, str]) -> list[str]:
    """The ``spark-submit`` of Spark's own Connect server, bound to 127.0.0.1:``port``."""
    settings = {
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.sql.session.timeZone": "UTC",
        **conf,
    }
    command = [str(SPARK_SUBMIT), "--class", SERVER_CLASS, "--name", "Spark Connect server"]
    command += ["--master", master, "--driver-memory", memory]
    for key, value in settings.items():
        command += ["--conf", f"{key}={value}"]
    return command


class LocalSparkConnectServer:
    """``with LocalSparkConnectServer(logs) as url:`` -> ``sc://127.0.0.1:PORT``, stopped on exit.

    ``master``: where the server runs its queries (``local[N]``, or ``spark://`` of a standalone cluster).
    ALS checkpoints go to ``<log_dir>/checkpoints`` (the server's ``spark.checkpoint.dir``), removed on exit.
    """

    def __init__(
        self,
        log_dir: Path,
        master: str = "local[*]",
        port: int = 0,
        memory: str = "2g",
        conf: dict[str, str] | None = None,
        timeout_s: float = 120,
    ):
        self.log_dir = Path(log_dir)
        self.master, self.port, self.memory, self.timeout_s = master, port, memory, timeout_s
        self.conf = dict(conf or {})
        self.services = Services("spark connect")
        self.process: subprocess.Popen | None = None
        self.url = ""

    @property
    def log_path(self) -> Path:
        return self.log_dir / "spark-connect.log"

    @property
    def checkpoints(self) -> Path:
        return self.log_dir / "checkpoints"

    def __enter__(self) -> str:
        self.services = Services("spark connect")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        port = self.port or free_port()
        env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(self.log_dir)}
        env.pop("SPARK_REMOTE", None)  # the server is classic Spark; a client's setting would make it a client
        env.pop("SPARK_CONNECT_MODE_ENABLED", None)
        conf = {"spark.checkpoint.dir": str(self.checkpoints), **self.conf}
        try:
            self.services.handle_signals()  # a SIGTERM or SIGHUP from here on unwinds through __exit__, as Ctrl-C does
            with self.log_path.open("w") as out:
                self.process = self.services.start(
                    server_command(self.master, port, self.memory, conf), env=env, stdout=out, stderr=subprocess.STDOUT
                )
            self._wait_started(port)
        except BaseException:
            self.__exit__()
            raise
        self.url = f"sc://127.0.0.1:{port}"
        return self.url

    def _wait_started(self, port: int) -> None:
        """Until the server logs that it serves (its port alone opens before the session state is ready)."""
        deadline = time.monotonic() + self.timeout_s
        while STARTED_LINE not in self.log_path.read_text(errors="replace"):
            assert self.process is not None
            if self.process.poll() is not None or time.monotonic() > deadline:
                state = f"exited {self.process.returncode}" if self.process.poll() is not None else "timed out"
                raise RuntimeError(
                    f"Spark Connect server on 127.0.0.1:{port} did not start ({state}); "
                    f"{self.log_path}: {self.log_path.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.5)

    def __exit__(self, *exc) -> None:
        self.services.stop()
        shutil.rmtree(self.checkpoints, ignore_errors=True)
