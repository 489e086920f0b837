"""What a command starts, it stops: its services, each in a session of its own, stopped together.

``Services`` starts each service with ``start_new_session`` (its pid is its process group and session)
and a marker in its environment (``MLTRAIN_SERVICES=<name>/<pid>/<token>``) that everything it starts
inherits: the code servers the Dagster daemon spawns, their run workers, a workload that moved to a
session of its own. Stopping sends SIGTERM to every service's process group, waits up to a grace for
all of them to go, then sends SIGKILL to the groups and to every process still in one of the sessions
or carrying the marker (read from ``/proc``).

While the services run, the first SIGINT, SIGTERM or SIGHUP (Ctrl-C, ``docker stop``, systemd, a CI
runner, a closed terminal) raises ``StopSignal`` (a ``KeyboardInterrupt``) in the main thread, so the
command unwinds through its ``with``/``finally`` into the graceful stop; a second one, or one during
any stop, sends SIGKILL to all of them at once. A signal the command inherited as ignored (``nohup``)
stays ignored. Handlers are restored when the services are stopped.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from mltrain_assets.launch import procfs
from mltrain_assets.launch.local_objects import processes_with

MARKER_ENV = "MLTRAIN_SERVICES"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE_S = 20.0


class StopSignal(KeyboardInterrupt):
    """The first stop signal, raised where the main thread was: unwinding stops the services."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def _say(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # a closed terminal (SIGHUP) must not stop the stop
        print(line, file=sys.stderr, flush=True)


class Services:
    """``with Services("spark cluster") as services: services.start([...], env=env)``; all stopped on exit."""

    def __init__(self, name: str, grace_s: float = GRACE_S, say: Callable[[str], None] = _say):
        self.name, self.grace_s, self.say = name, grace_s, say
        self.marker = f"{name.replace(' ', '-')}/{os.getpid()}/{secrets.token_hex(6)}"
        self.processes: list[subprocess.Popen] = []
        self.stopping = False
        self._saved: dict[int, Any] = {}

    # ------------------------------------------------------------------ starting

    def start(self, command: list[str], *, env: dict[str, str], **popen_kwargs: Any) -> subprocess.Popen:
        """``subprocess.Popen`` in a new session, with the marker in its environment."""
        # A stop signal this process inherited as ignored would be inherited by the service too: reset it there.
        ignored = [s for s in STOP_SIGNALS if signal.getsignal(s) == signal.SIG_IGN]
        process = subprocess.Popen(
            command,
            env={**env, MARKER_ENV: self.marker},
            start_new_session=True,
            preexec_fn=(lambda: [signal.signal(s, signal.SIG_DFL) for s in ignored]) if ignored else None,
            **popen_kwargs,
        )
        self.processes.append(process)
        return process

    def handle_signals(self) -> None:
        """Until ``stop``: SIGINT/SIGTERM/SIGHUP stop the services (first: gracefully; second: SIGKILL now)."""
        if self._saved or threading.current_thread() is not threading.main_thread():
            return  # signals reach only the main thread; elsewhere the caller's own handling applies
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) != signal.SIG_IGN:  # nohup's SIGHUP stays ignored
                self._saved[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stopping:
            self.say(f"{self.name}: {name} again: killing every process now")
            self.kill()
            return
        self.stopping = True
        self.say(f"{self.name}: {name}: stopping (up to {self.grace_s:.0f}s; send it again to kill them now)")
        raise StopSignal(signum)

    def __enter__(self) -> Services:
        self.handle_signals()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ stopping

    def sessions(self) -> set[int]:
        return {process.pid for process in self.processes}

    def leftovers(self) -> list[int]:
        """Live processes of ours: in a service's session, or carrying the marker (one that left for its own)."""
        found = {stat.pid for stat in procfs.in_sessions(self.sessions()) if stat.running}
        found.update(processes_with(f"{MARKER_ENV}={self.marker}"))
        found.discard(os.getpid())
        return sorted(found)

    def kill(self) -> None:
        """SIGKILL every service's process group and every other process of ours; no waiting (a signal handler calls it)."""
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        for pid in self.leftovers():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def stop(self, grace_s: float | None = None) -> None:
        """SIGTERM to every service's process group, up to ``grace_s`` for all of them to go, then SIGKILL."""
        self.stopping = True
        try:
            for process in self.processes:
                if process.poll() is None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + (self.grace_s if grace_s is None else grace_s)
            while time.monotonic() < deadline and self._live():
                time.sleep(0.2)
            for _ in range(50):  # SIGKILL is not refused; a process in the middle of fork() may add one more
                self.kill()
                if not self._live():
                    break
                time.sleep(0.1)
        finally:
            self._restore_signals()

    def _live(self) -> bool:
        for process in self.processes:
            process.poll()  # reap our own children (a zombie is gone, but only once waited for)
        return bool(self.leftovers())

    def _restore_signals(self) -> None:
        saved, self._saved = self._saved, {}
        for signum, handler in saved.items():
            signal.signal(signum, handler)
