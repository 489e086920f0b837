"""The ``torchrun`` target of ``train_recommender``: one DDP worker per process.

torchrun starts workers in their own sessions, so killing the launcher's process group
would leave them running. Each worker therefore asks Linux to SIGKILL it when its parent
(the torchrun agent) dies, before anything else happens.

A finished worker leaves with ``os._exit``: everything it produced (checkpoints) is already
durable, and interpreter finalization with live gloo/OpenMP/Arrow threads can hang, which
would keep torchrun waiting for a worker that has in fact finished.
"""

from __future__ import annotations

import os
import signal
import sys


def die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the agent died before the request took effect
        os._exit(1)


if __name__ == "__main__":
    die_with_parent()
    from mltrain_assets.workloads.train_recommender import worker_main

    try:
        code = worker_main()
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
