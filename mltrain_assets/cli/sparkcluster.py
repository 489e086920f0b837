"""A standalone Spark cluster (master + one worker) on 127.0.0.1: the cluster path on one machine.

pip's pyspark has no ``start-master.sh``; ``spark-class`` starts the Master and Worker. Used by
the demo in ``k8s-local`` mode (the stand-in for the production cluster's Spark) and by tests.
Master and worker run in sessions of their own (``cli/services.py``): leaving the ``with`` block, or
a SIGINT, SIGTERM or SIGHUP meanwhile, stops both and their executors (SIGTERM, up to 20 s, then
SIGKILL; at once on a second signal).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pyspark

from mltrain_assets.cli.services import Services
from mltrain_assets.loopback import free_port, wait_for_port

SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"


class LocalSparkCluster:
    """``with LocalSparkCluster(logs) as url:`` -> ``spark://127.0.0.1:PORT``, stopped on exit."""

    def __init__(self, log_dir: Path, cores: int = 2, memory: str = "2g", timeout_s: float = 90):
        self.log_dir = Path(log_dir)
        self.cores, self.memory, self.timeout_s = cores, memory, timeout_s
        self.services = Services("spark cluster")
        self.url = ""

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
        log = self.log_dir / f"spark-{name}.log"
        with log.open("w") as out:
            process = self.services.start([str(SPARK_CLASS), *args], env=env, stdout=out, stderr=subprocess.STDOUT)
        return process, log

    def __enter__(self) -> str:
        self.services = Services("spark cluster")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        env = {
            **os.environ,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOG_DIR": str(self.log_dir),
            "SPARK_WORKER_DIR": str(self.log_dir / "work"),
        }
        master = ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port)]
        try:
            self.services.handle_signals()  # a SIGTERM or SIGHUP from here on unwinds through __exit__, as Ctrl-C does
            self._start("master", [*master, "--webui-port", str(free_port())], env)
            wait_for_port(port, self.timeout_s)
            self.url = f"spark://127.0.0.1:{port}"
            worker = ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", str(self.cores)]
            worker_process, log = self._start(
                "worker", [*worker, "--memory", self.memory, "--webui-port", str(free_port()), self.url], env
            )
            deadline = time.monotonic() + self.timeout_s
            while "Successfully registered with master" not in log.read_text():
                if worker_process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Spark worker did not register with {self.url}: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        except BaseException:
            self.__exit__()
            raise
        return self.url

    def __exit__(self, *exc) -> None:
        self.services.stop()
