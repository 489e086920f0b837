"""The one reader of Linux ``/proc``: a process's state, parent, session, CPU, memory and start time.

Used by the launch supervisor (metering, the guard that kills orphaned workloads) and by
``instance/heal.py`` (is a run worker still the process it was?), and by ``bench/guard.py`` (the others'
runnable threads). Standard library only: the guard
runs it in a bare interpreter. Every function answers ``None`` (or nothing) where ``/proc`` is
absent (macOS) or the process is gone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

PROC = "/proc"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_KB = (os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096) // 1024
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str  # R, S, D, Z (zombie), X (dead), ...
    ppid: int
    pgrp: int
    session: int
    cpu_s: float  # own user + system, plus that of the children it reaped
    rss_kb: int
    start_ticks: int  # clock ticks after boot

    @property
    def running(self) -> bool:
        return self.state not in ("Z", "X")


def _fields(path: str) -> list[bytes]:
    """A ``stat`` file's fields after "(comm)", which may hold spaces: state ppid pgrp session ... utime(14) stime
    cutime cstime ... starttime(22) vsize rss(24); here 0-based from state."""
    with open(path, "rb") as handle:
        raw = handle.read()
    return raw[raw.rindex(b")") + 2 :].split()


def stat(pid: int) -> ProcStat | None:
    """``/proc/<pid>/stat`` parsed; ``None`` if the process (or ``/proc``) is not there."""
    try:
        fields = _fields(f"{PROC}/{pid}/stat")
        return ProcStat(
            pid=pid,
            state=fields[0].decode(),
            ppid=int(fields[1]),
            pgrp=int(fields[2]),
            session=int(fields[3]),
            cpu_s=sum(int(value) for value in fields[11:15]) / CLOCK_TICKS,
            rss_kb=int(fields[21]) * PAGE_KB,
            start_ticks=int(fields[19]),
        )
    except (OSError, ValueError, IndexError):
        return None


def thread_states(pid: int) -> list[str]:
    """The state (R, S, D, ...) of each of the process's threads; none if it is gone."""
    try:
        tasks = os.listdir(f"{PROC}/{pid}/task")
    except OSError:
        return []
    states = []
    for task in tasks:
        try:
            states.append(_fields(f"{PROC}/{pid}/task/{task}/stat")[0].decode())
        except (OSError, ValueError, IndexError):
            continue  # ended while listed
    return states


def peak_rss_kb(pid: int) -> int:
    """The process's resident-memory high-water mark (``VmHWM``); 0 if unknown."""
    try:
        with open(f"{PROC}/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def pids() -> list[int] | None:
    """Every pid; ``None`` without ``/proc``."""
    try:
        return [int(entry) for entry in os.listdir(PROC) if entry.isdigit()]
    except OSError:
        return None


def in_sessions(sessions: set[int]) -> Iterator[ProcStat]:
    """Every process whose session is one of ``sessions``."""
    for pid in pids() or []:
        found = stat(pid)
        if found is not None and found.session in sessions:
            yield found


def boot_id() -> str | None:
    try:
        with open(BOOT_ID_PATH) as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def started_at(start_ticks: int) -> float | None:
    """A process start time (ticks since boot) as a Unix timestamp."""
    try:
        with open(f"{PROC}/stat") as handle:
            boot = next(float(line.split()[1]) for line in handle if line.startswith("btime "))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return boot + start_ticks / CLOCK_TICKS
