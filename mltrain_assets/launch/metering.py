"""What a launch cost: CPU seconds and peak memory of the process trees it started.

The leader's own figures come from the kernel when it is reaped (``os.wait4``'s rusage: it
includes every descendant reaped below it); what nobody in the tree reaps (a local Spark JVM that
outlives its Python driver, a grandchild whose parent died first) is found in ``/proc`` by
session (each launch is a session of its own) and its CPU at its last sighting added.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from typing import Any

from mltrain_assets.launch import procfs

_MAXRSS_UNIT_KB = 1 / 1024 if sys.platform == "darwin" else 1  # ru_maxrss: bytes on macOS, KiB on Linux


@dataclass(frozen=True)
class TreeUsage:
    """CPU seconds and peak resident memory of the process trees one launch started."""

    cpu_s: float
    peak_rss_mb: float
    measured: str

    @classmethod
    def of(cls, meters: list[TreeMeter]) -> TreeUsage:
        sampled = all(meter.sampled for meter in meters)
        return cls(
            cpu_s=round(sum(meter.cpu_s() for meter in meters), 3),
            peak_rss_mb=round(max((meter.peak_kb() for meter in meters), default=0) / 1024, 1),
            measured="wait4 + /proc" if sampled else "wait4",
        )


class TreeMeter:
    """One launched process tree: ``wait4`` for the leader, ``/proc`` for what nobody reaps.

    Memory: the largest per-process high-water mark (``VmHWM``) or sum of the tree's resident sets
    seen while sampling (every ~0.5 s). The leader's ``ru_maxrss`` counts only when it exceeds the
    run worker's own peak: Linux carries the parent's peak into a forked child's ``ru_maxrss``
    until ``exec``, so below that it may be the run worker's memory, not the workload's.
    """

    def __init__(self, pid: int):
        self.sid = pid  # a new session per launch: the leader's pid is the session id
        self.parent_maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_UNIT_KB
        self.rusage: Any = None  # the leader's, from os.wait4 when it is reaped
        self.orphans: dict[int, float] = {}  # pid -> CPU seconds at its last sighting outside the tree
        self.leader_cpu = 0.0
        self.hwm_kb = 0
        self.tree_rss_kb = 0
        self.live = True  # some process of the session still runs
        self.sampled = False

    def observe(self, members: dict[int, procfs.ProcStat]) -> None:
        self.sampled = True
        running = {pid for pid, proc in members.items() if proc.running}
        self.live = bool(running)
        self.tree_rss_kb = max(self.tree_rss_kb, sum(members[pid].rss_kb for pid in running))
        for pid, proc in members.items():
            self.hwm_kb = max(self.hwm_kb, procfs.peak_rss_kb(pid))
            if pid == self.sid:
                self.leader_cpu = proc.cpu_s
            elif proc.ppid not in running or pid in self.orphans:
                self.orphans[pid] = proc.cpu_s  # its parent is gone: wait4 will not count it

    def cpu_s(self) -> float:
        leader = self.rusage.ru_utime + self.rusage.ru_stime if self.rusage is not None else self.leader_cpu
        return leader + sum(self.orphans.values())

    def peak_kb(self) -> float:
        leader = self.rusage.ru_maxrss * _MAXRSS_UNIT_KB if self.rusage is not None else 0
        if leader <= self.parent_maxrss_kb:
            leader = 0  # possibly the run worker's peak carried over by fork, not the workload's
        return max(leader, self.hwm_kb, self.tree_rss_kb)


def sample(meters: list[TreeMeter]) -> None:
    """One pass over ``/proc``: each live meter sees the processes of its session."""
    live = {meter.sid for meter in meters if meter.live}
    if not live or procfs.pids() is None:
        return
    members: dict[int, dict[int, procfs.ProcStat]] = {}
    for proc in procfs.in_sessions(live):
        members.setdefault(proc.session, {})[proc.pid] = proc
    for meter in meters:
        if meter.live:
            meter.observe(members.get(meter.sid, {}))
