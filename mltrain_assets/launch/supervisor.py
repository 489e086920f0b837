"""Local processes under supervision: own process groups, a deadline, nothing outliving the run worker.

``run_processes`` starts each command in a session of its own, waits for all (reaping each with
``os.wait4``, whose rusage is the tree's CPU and peak memory), samples ``/proc`` for what nobody
reaps, and on a timeout, an interrupt or any exception kills every group. The workloads do not
outlive the run worker: each leader is SIGKILLed by the kernel when the thread that started it
exits (``PR_SET_PDEATHSIG``), and a guard process (``launch/guard.py``) kills their whole groups
and sessions once the run worker is gone. A leader that failed has the rest of its group killed.

``supervise`` does the same and can also enforce a memory limit per process tree (killing it as the
OOM killer would) and replace a process in its slot on request (k8s-local's pod eviction).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from mltrain_assets.launch.metering import TreeMeter, TreeUsage, sample

# Between the polite signal to a workload's process group and SIGKILL to whatever is left.
KILL_GRACE_S = 10.0
# After a workload's main process exits, how long to keep watching what it left running (a local
# Spark JVM outlives its Python driver by a moment) to count its CPU.
SETTLE_S = 5.0
# A container the OOM killer ended exits 137 (128 + SIGKILL), as the kubelet reports it.
OOM_EXIT = 137


class LaunchTimeout(Exception):
    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        super().__init__(f"timed out after {timeout_s:.0f}s and was killed")


@dataclass
class Supervised:
    """What ``supervise`` saw: each slot's last exit code, the cost of every process it started, and what it replaced."""

    returncodes: list[int]
    usage: TreeUsage
    attempts: list[int]  # processes started per slot: 1, plus one per replacement
    seconds_lost: float = 0.0  # how long the replaced (evicted) processes had run
    out_of_memory: list[int] = field(default_factory=list)  # slots killed past their memory limit


def run_processes(
    launches: Sequence[tuple[list[str], dict[str, str]]],
    *,
    timeout_s: float,
    ok_exits: tuple[int, ...] = (0,),
    log: str | None = None,
) -> tuple[list[int], TreeUsage]:
    """Run every ``(command, env)`` at once and wait for all; ``(exit codes, usage)`` (``supervise`` without extras)."""
    supervised = supervise(launches, timeout_s=timeout_s, ok_exits=ok_exits, log=log)
    return supervised.returncodes, supervised.usage


def supervise(
    launches: Sequence[tuple[list[str], dict[str, str]]],
    *,
    timeout_s: float,
    ok_exits: tuple[int, ...] = (0,),
    log: str | None = None,
    memory_limits_kb: Sequence[int | None] | None = None,
    evictions: Callable[[], Iterable[int]] | None = None,
) -> Supervised:
    """Run every ``(command, env)`` at once and wait for all.

    A process exiting with a code outside ``ok_exits`` ends the wait for the others when there
    are several (one node failed: the others would wait for it at the rendezvous). Raises
    ``LaunchTimeout`` past ``timeout_s``; any exception or interrupt (a cancelled run) kills every
    group (SIGINT first) and propagates. ``log``: a file for their stdout and stderr (default: ours).

    ``memory_limits_kb``: per slot, a limit on the resident memory of its process tree (sampled
    with the metering, ~0.5 s): past it the whole group is SIGKILLed, as the kernel's OOM killer
    does to a container (its exit code is then 137). ``evictions``: asked at every poll, the slots
    to evict now; each one's group gets SIGTERM (SIGKILL after ``KILL_GRACE_S``) and the same
    command is started again in its slot.
    """
    limits = list(memory_limits_kb or [None] * len(launches))
    with _RunWorkerGuard() as guard, contextlib.ExitStack() as files:
        output = files.enter_context(open(log, "a")) if log else None

        def start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
            process = subprocess.Popen(
                command,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
                start_new_session=True,
                preexec_fn=_die_with_parent_thread,
            )
            guard.watch(process.pid)
            return process

        processes: list[subprocess.Popen] = []
        try:
            for command, env in launches:
                processes.append(start(command, env))
        except BaseException:
            for process in processes:
                kill_group(process, grace_s=0)
            raise
        run = _Run(processes, [TreeMeter(process.pid) for process in processes], limits, time.monotonic())
        deadline = time.monotonic() + timeout_s
        try:
            _wait(run, deadline, timeout_s, ok_exits, evictions, lambda slot: start(*launches[slot]))
        except LaunchTimeout:
            for process in run.processes:
                kill_group(process)
            raise
        except BaseException:
            for process in run.processes:
                kill_group(process, first=signal.SIGINT)
            raise
        for process in run.processes:
            if process.returncode is None or (process.returncode not in ok_exits and group_alive(process.pid)):
                kill_group(process)  # still running, or what a failed leader left behind
        _reap(run.processes, run.meters, block=True)
        _settle(run.meters, until=min(time.monotonic() + SETTLE_S, deadline))
    returncodes = [OOM_EXIT if slot in run.out_of_memory else int(p.returncode) for slot, p in enumerate(run.processes)]
    return Supervised(
        returncodes=returncodes,
        usage=TreeUsage.of(run.meters + run.replaced),
        attempts=run.attempts,
        seconds_lost=round(run.seconds_lost, 1),
        out_of_memory=run.out_of_memory,
    )


@dataclass
class _Run:
    """The processes of a supervised launch, one slot each, and what happened to them."""

    processes: list[subprocess.Popen]
    meters: list[TreeMeter]
    limits_kb: list[int | None]
    started: float
    replaced: list[TreeMeter] = field(default_factory=list)  # meters of evicted processes: their cost counts too
    attempts: list[int] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)
    seconds_lost: float = 0.0
    out_of_memory: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.attempts = [1] * len(self.processes)
        self.started_at = [self.started] * len(self.processes)


def _wait(
    run: _Run,
    deadline: float,
    timeout_s: float,
    ok_exits: tuple[int, ...],
    evictions: Callable[[], Iterable[int]] | None,
    restart: Callable[[int], subprocess.Popen],
) -> None:
    processes, meters = run.processes, run.meters
    poll_s = 0.05  # doubling to 0.5 s: a short workload is still sampled
    while any(process.returncode is None for process in processes):
        if time.monotonic() >= deadline:
            raise LaunchTimeout(timeout_s)
        _reap(processes, meters)
        sample(meters)
        for slot, (process, meter, limit) in enumerate(zip(processes, meters, run.limits_kb, strict=True)):
            if limit is not None and process.returncode is None and meter.tree_rss_kb > limit:
                kill_group(process, first=signal.SIGKILL, grace_s=0)  # the OOM killer gives no grace
                run.out_of_memory.append(slot)
        for slot in evictions() if evictions else ():
            if processes[slot].returncode is not None:
                continue  # finished (or failed) already: nothing to evict
            kill_group(processes[slot])
            run.seconds_lost += time.monotonic() - run.started_at[slot]
            run.replaced.append(meters[slot])
            processes[slot] = restart(slot)
            meters[slot] = TreeMeter(processes[slot].pid)
            run.attempts[slot] += 1
            run.started_at[slot] = time.monotonic()
        failed = [p.returncode for p in processes if p.returncode is not None and p.returncode not in ok_exits]
        if failed and len(processes) > 1:
            return
        if any(process.returncode is None for process in processes):
            time.sleep(min(poll_s, max(deadline - time.monotonic(), 0)))
            poll_s = min(poll_s * 2, 0.5)


def _reap(processes: list[subprocess.Popen], meters: list[TreeMeter], block: bool = False) -> None:
    """Reap finished leaders with ``os.wait4``, keeping the kernel's rusage of their trees."""
    for process, meter in zip(processes, meters, strict=True):
        if process.returncode is not None:
            continue
        try:
            pid, status, rusage = os.wait4(process.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): the status is lost, as Popen has it
            process.returncode = 0
            continue
        if pid == process.pid:
            meter.rusage = rusage
            process.returncode = os.waitstatus_to_exitcode(status)  # Popen's own attribute: it reports it from now on


def _settle(meters: list[TreeMeter], until: float) -> None:
    """Keep sampling while processes a finished leader left behind still run (bounded by ``until``)."""
    sample(meters)
    while any(meter.live and meter.sampled for meter in meters) and time.monotonic() < until:
        time.sleep(0.1)
        sample(meters)


def kill_group(process: subprocess.Popen, first: signal.Signals = signal.SIGTERM, grace_s: float | None = None) -> None:
    """Signal the workload's whole process group, give it ``grace_s``, then SIGKILL whatever is left.

    The leader exiting is not enough: a torchrun worker or Spark JVM that ignores or outlives the
    signal would keep running (and holding GPUs) after the run is gone.
    """
    deadline = time.monotonic() + (KILL_GRACE_S if grace_s is None else grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, first)
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    while time.monotonic() < deadline and group_alive(process.pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# ------------------------------------------------------------------ workloads die with their run worker

_PR_SET_PDEATHSIG = 1
_LIBC_PRCTL = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        _LIBC_PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it


def _die_with_parent_thread() -> None:
    """``preexec_fn``: in the child, before exec, ask the kernel to SIGKILL it when its parent thread exits.

    Only an already-resolved C call between fork and exec (no imports, no locks). The kernel sends
    the signal when the thread that forked it exits, here the one waiting in ``run_processes``, so in
    practice when the run worker dies.
    """
    if _LIBC_PRCTL is not None:
        _LIBC_PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class _RunWorkerGuard:
    """``launch/guard.py`` in a session of its own; the run worker holds the only write end of its stdin.

    When the run worker dies (SIGKILL included) the kernel closes that end and the guard kills the
    watched groups. A run worker that finishes normally says ``done`` first. If the guard cannot
    start, the workloads still die with the run worker through ``PR_SET_PDEATHSIG`` (the leaders only).
    """

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> _RunWorkerGuard:
        with contextlib.suppress(OSError):
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-m", "mltrain_assets.launch.guard"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # not in the run worker's group: a kill of that group does not reach it
            )
        return self

    def watch(self, pgid: int) -> None:
        self._say(f"{pgid}\n".encode())

    def _say(self, data: bytes) -> None:
        if self.process is None or self.process.stdin is None:
            return
        try:
            self.process.stdin.write(data)
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # the guard died (someone killed it): the leaders still die with the run worker

    def __exit__(self, *exc) -> None:
        if self.process is None:
            return
        self._say(b"done\n")
        with contextlib.suppress(BrokenPipeError, OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
