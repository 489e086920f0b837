"""``mltrain dev`` stopped by SIGTERM (``docker stop``, systemd, a CI runner) leaves nothing of its stack running."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from mltrain_assets.cli.services import STOP_SIGNALS
from mltrain_assets.launch.local_objects import processes_with
from mltrain_assets.loopback import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.services]
REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
START_S = 300.0
STOP_S = 30.0


def _default_signals() -> None:
    for signum in STOP_SIGNALS:  # whoever started pytest may have left one ignored (nohup, a background job)
        signal.signal(signum, signal.SIG_DFL)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _stack(home: Path, command: int) -> dict[int, str]:
    """Every process of the stack (each inherits MLTRAIN_HOME, unique to this test), by pid: its command line."""
    return {pid: _cmdline(pid) for pid in processes_with(f"MLTRAIN_HOME={home}") if pid != command}


def _roles(stack: dict[int, str]) -> set[str]:
    roles = set()
    for pid, cmdline in stack.items():
        for role in ("dagster-webserver", "dagster-daemon", "mlflow"):
            if f"bin/{role} " in cmdline:
                roles.add(role)
                # A code server: a Dagster process the daemon (or the webserver) started.
                roles.update(
                    f"{role}'s code server"
                    for child, line in stack.items()
                    if _ppid(child) == pid and "dagster" in line
                )
    return roles


def test_sigterm_to_mltrain_dev_stops_its_whole_stack(mltrain_home, tmp_path):
    port = free_port()
    log = tmp_path / "mltrain-dev.log"
    process = subprocess.Popen(
        [str(BIN / "mltrain"), "dev", "--port", str(port), "--mlflow-port", str(free_port())],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_default_signals,
    )
    try:
        wanted = {"dagster-webserver", "dagster-daemon", "mlflow", "dagster-daemon's code server"}
        deadline = time.monotonic() + START_S
        while not (_up(log) and _answers(port) and wanted <= _roles(_stack(mltrain_home, process.pid))):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mltrain dev did not come up: {_roles(_stack(mltrain_home, process.pid))}; {_tail(log)}")
            time.sleep(1)
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=STOP_S)
        deadline = time.monotonic() + STOP_S
        while (left := _stack(mltrain_home, process.pid)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert left == {}, _tail(log)
        assert returncode == 0, _tail(log)
        assert "mltrain dev: SIGTERM: stopping" in log.read_text()
    finally:
        for pid in processes_with(f"MLTRAIN_HOME={mltrain_home}"):  # a failed test leaves nothing running either
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=STOP_S)


def _up(log: Path) -> bool:
    """Past its start (every service healthy): a signal now meets the running stack, not its start-up."""
    return "Ctrl-C stops everything" in log.read_text()


def _answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok
    except requests.RequestException:
        return False


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]
