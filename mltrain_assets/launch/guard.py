"""The guard: kills a run worker's workloads when the run worker dies (``python -I -m mltrain_assets.launch.guard``).

It reads one process-group id per line on stdin from the run worker; on ``done`` it exits; on
EOF without ``done`` (the run worker died: the kernel closed its end of the pipe) it SIGKILLs
those groups and every process left in their sessions (a torchrun agent, a Spark JVM that moved
to a group of its own). Standard library and ``procfs`` only: it starts in a few tens of ms.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from mltrain_assets.launch import procfs


def main() -> int:
    leaders: list[int] = []
    for line in sys.stdin.buffer:
        if line.strip() == b"done":
            return 0
        leaders.append(int(line))
    for pgid in leaders:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
    for process in procfs.in_sessions(set(leaders)):
        with contextlib.suppress(OSError):
            os.kill(process.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
