"""The standalone Spark cluster a command starts (master + worker) stops with it on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mltrain_assets.cli.services import STOP_SIGNALS
from mltrain_assets.launch.local_objects import processes_with

pytestmark = pytest.mark.services
REPO_ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 120.0
# A command that holds the cluster until a stop signal, then exits with 128 + its number.
HOLD_A_CLUSTER = """
import sys, time
from pathlib import Path
from mltrain_assets.cli.services import StopSignal
from mltrain_assets.cli.sparkcluster import LocalSparkCluster
try:
    with LocalSparkCluster(Path(sys.argv[1]), cores=1, memory="512m", timeout_s=90) as url:
        print(url, flush=True)
        while True:
            time.sleep(1)
except StopSignal as stop:
    sys.exit(128 + stop.signum)
"""


def _default_signals() -> None:
    for signum in STOP_SIGNALS:  # whoever started pytest may have left one ignored (nohup, a background job)
        signal.signal(signum, signal.SIG_DFL)


def _jvms(marker: str) -> list[str]:
    lines = []
    for pid in processes_with(marker):
        with contextlib.suppress(OSError):  # gone meanwhile
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
    return lines


def test_sigterm_stops_the_master_and_the_worker(tmp_path):
    logs = tmp_path / "spark"
    marker = f"SPARK_LOG_DIR={logs}"  # in the environment of both JVMs (LocalSparkCluster sets it), unique here
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_CLUSTER, str(logs)],
        cwd=REPO_ROOT,
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"},
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "command.log").open("wb"),
        text=True,
        start_new_session=True,
        preexec_fn=_default_signals,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("spark://127.0.0.1:"), (tmp_path / "command.log").read_text()
        running = _jvms(marker)
        assert any("deploy.master.Master" in line for line in running), running
        assert any("deploy.worker.Worker" in line for line in running), running
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=WAIT_S) == 128 + signal.SIGTERM, (tmp_path / "command.log").read_text()
        assert _jvms(marker) == []
    finally:
        for pid in processes_with(marker):  # a failed test leaves nothing running either
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.kill()
        process.wait(timeout=WAIT_S)
