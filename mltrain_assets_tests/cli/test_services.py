"""Services a command starts stop with it: on SIGTERM after a grace, at once on a second signal, nothing left."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mltrain_assets.cli.services import STOP_SIGNALS, Services
from mltrain_assets.launch.local_objects import processes_with

REPO_ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 60.0


def _default_signals() -> None:
    for signum in STOP_SIGNALS:  # whoever started pytest may have left one ignored (nohup, a background job)
        signal.signal(signum, signal.SIG_DFL)


def _wait_for(predicate, what: str, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + WAIT_S
    while not (found := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {WAIT_S:.0f}s: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    return found


@pytest.fixture
def command(tmp_path):
    """Starts services_child with GRACE_S in its own session; yields (process, its processes' marker, log)."""
    started: list[tuple[subprocess.Popen, str]] = []

    def start(grace_s: float):
        marker = f"SERVICES_TEST={secrets.token_hex(8)}"  # every process of the command inherits it
        log = tmp_path / "command.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "mltrain_assets_tests.cli.services_child", str(grace_s)],
            cwd=REPO_ROOT,
            env={**os.environ, marker.split("=")[0]: marker.split("=")[1]},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_default_signals,
        )
        started.append((process, marker))
        # The command, its three services and the process one of them started in a session of its own.
        _wait_for(lambda: len(processes_with(marker)) == 5, "five processes", process, log)
        return process, marker, log

    yield start
    for process, marker in started:  # a failed test leaves nothing running either
        for pid in processes_with(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=WAIT_S)


def test_sigterm_stops_every_service_and_what_they_started(command):
    process, marker, log = command(grace_s=1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=WAIT_S) == 128 + signal.SIGTERM, log.read_text()
    # The two that ignore SIGTERM got SIGKILL after the grace; the one in its own session by its marker.
    assert processes_with(marker) == []
    assert "test services: SIGTERM: stopping (up to 1s" in log.read_text()


def test_a_second_signal_kills_them_at_once(command):
    process, marker, log = command(grace_s=3600)
    process.send_signal(signal.SIGHUP)
    _wait_for(lambda: "SIGHUP: stopping" in log.read_text(), "stopping line", process, log)
    process.send_signal(signal.SIGINT)
    # Within an hour's grace only the SIGKILL the second signal sends ends the two that ignore SIGTERM.
    assert process.wait(timeout=WAIT_S) == 128 + signal.SIGHUP, log.read_text()
    assert processes_with(marker) == []
    assert "test services: SIGINT again: killing every process now" in log.read_text()


def test_handlers_are_restored_and_an_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        with Services("test services") as services:
            assert signal.getsignal(signal.SIGTERM) == services._on_signal
            assert signal.getsignal(signal.SIGINT) == services._on_signal
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        assert {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} == before
    finally:
        signal.signal(signal.SIGHUP, previous)
