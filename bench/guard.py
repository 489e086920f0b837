"""Figures you can trust: refuse to record while the machine is busy, and say the load every figure ran at.

Busy means either of:

- the load is above the core count: the 1-minute load average, or a short sample of our own (the mean
  number of runnable threads over ``SAMPLE_S`` seconds, read from ``/proc``, our own process tree
  excluded), which sees a job that started seconds ago before the 1-minute average does;
- another bench holds the lock (``LOCK_PATH``, one per machine: load is the machine's): an ``flock`` on
  an open file, so it dies with its process, no stale lock to clean up. The file names the holder's pid.

``hold()`` takes the lock and checks the load; busy, it raises ``Busy`` with a one-line reason, unless
forced, when it returns a ``Reading`` marked ``forced`` and every figure is marked "under load".
While the bench runs, a figure is marked "under load" only for other processes' run queue: the bench's
own Spark or torch threads raise the machine's load, and are what it measures.
A bench script started by a runner that holds the lock (its parent) runs under the parent's lock.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from mltrain_assets.launch import procfs

LOCK_PATH = Path(tempfile.gettempdir()) / "mltrain-bench.lock"
SAMPLE_S = 3.0
SAMPLE_EVERY_S = 0.1
# Exit status of a refused run: EX_TEMPFAIL, "try again later".
EXIT_BUSY = 75


class Busy(RuntimeError):
    """The machine is busy (load, or another bench): the figures would not be the machine's."""


@dataclasses.dataclass(frozen=True)
class Reading:
    """The machine's load at one moment: the 1-minute average and our own short sample."""

    load_1m: float
    sampled: float
    cores: int

    @property
    def busy(self) -> bool:
        """Before a bench starts: the minute's average or the others' run queue above the cores."""
        return max(self.load_1m, self.sampled) > self.cores

    @property
    def others_busy(self) -> bool:
        """While a bench runs: only the others' run queue counts (the 1-minute average holds our own work)."""
        return self.sampled > self.cores

    def words(self) -> str:
        return (
            f"load {self.load_1m:.2f} (1-min), {self.sampled:.2f} (sampled over {SAMPLE_S:.0f} s) on {self.cores} cores"
        )


def load_1m() -> float:
    return os.getloadavg()[0]


def runnable_tasks(root_pid: int | None = None) -> float:
    """Threads running or runnable now in processes other than ours: ``root_pid`` and its descendants excluded.

    The bench's own work (Spark's JVM, torchrun's workers) is what it measures, not load on the machine; the
    1-minute average cannot tell the two apart, this count can. Without procfs (macOS) the 1-minute average.
    """
    root_pid = os.getpid() if root_pid is None else root_pid
    listed = procfs.pids()
    if listed is None:
        return load_1m()
    parents = {found.pid: found.ppid for found in map(procfs.stat, listed) if found is not None}
    ours, changed = {root_pid}, True
    while changed:
        grown = ours | {pid for pid, parent in parents.items() if parent in ours}
        changed, ours = grown != ours, grown
    return float(sum(state == "R" for pid in parents.keys() - ours for state in procfs.thread_states(pid)))


def sample(
    seconds: float = SAMPLE_S, every_s: float = SAMPLE_EVERY_S, read: Callable[[], float] = runnable_tasks
) -> float:
    """The mean of ``read()`` over ``seconds``."""
    values, deadline = [], time.monotonic() + seconds
    while True:
        values.append(read())
        if time.monotonic() >= deadline:
            return sum(values) / len(values)
        time.sleep(every_s)


def reading(
    cores: int | None = None,
    read_load: Callable[[], float] = load_1m,
    read_sample: Callable[[], float] = sample,
) -> Reading:
    return Reading(load_1m=round(read_load(), 2), sampled=round(read_sample(), 2), cores=cores or os.cpu_count() or 1)


def quick_reading(cores: int | None = None, read_load: Callable[[], float] = load_1m) -> Reading:
    """A reading without the sampling pause (between figures): the 1-minute average and the run queue now."""
    return reading(cores, read_load, runnable_tasks)


def lock(path: Path = LOCK_PATH) -> IO[str] | None:
    """Hold the bench lock until the returned file is closed (or this process ends); ``Busy`` if another holds it.

    ``None`` when our parent holds it: a bench script run by ``run_all.py`` runs under the runner's lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        if holder.split(" ", 1)[0] == str(os.getppid()):
            return None
        raise Busy(f"another bench is running (pid {holder or 'unknown'}; lock {path})") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
    handle.flush()
    return handle


@dataclasses.dataclass
class Hold:
    """What ``hold`` found: the lock (None under a runner, or forced past another bench), the load, the verdict."""

    lock: IO[str] | None
    reading: Reading
    under_load: bool  # forced onto a busy machine (or beside another bench): every figure is marked
    under_runner: bool  # run_all.py above us holds the lock, judged the load and annotates our figures

    def release(self) -> None:
        if self.lock is not None:
            self.lock.close()


def hold(force: bool = False, path: Path = LOCK_PATH, measure: Callable[[], Reading] = reading) -> Hold:
    """The lock held and the load checked, or ``Busy`` naming why not (forced: recorded as under load instead)."""
    try:
        handle = lock(path)
        other = ""
    except Busy as busy:
        if not force:
            raise
        handle, other = None, str(busy)
    now = measure()
    if handle is None and not other:
        return Hold(None, now, False, under_runner=True)
    if now.busy and not force:
        if handle is not None:
            handle.close()
        raise Busy(f"the machine is busy: {now.words()}; wait until it is quiet, or --force to record anyway")
    return Hold(handle, now, bool(other) or now.busy, under_runner=False)


def under_load_note(before: Reading, after: Reading, started_busy: bool = False) -> str:
    """What every figure recorded under load says: the others' load (and the minute's, forced onto a busy machine)."""
    worst = max(before.sampled, after.sampled, *((before.load_1m, after.load_1m) if started_busy else ()))
    return f"under load (load {worst:.2f} on {before.cores} cores)"


def annotate(figure: dict, before: Reading, after: Reading, started_busy: bool = False) -> dict:
    """The figure with the load it ran at; marked "under load" if the run was forced onto a busy machine or
    other processes' load rose above the cores around this figure (the bench's own work does not count)."""
    load = {
        "before": dataclasses.asdict(before),
        "after": dataclasses.asdict(after),
        "cores": before.cores,
    }
    if started_busy or before.others_busy or after.others_busy:
        load["under_load"] = under_load_note(before, after, started_busy)
    return {**figure, "load": load}


class Figures:
    """Prints JSON figure lines; ``annotating`` (a runner, or a script run alone) adds the load and the goals.

    A script under ``run_all.py`` prints its figures bare: the runner annotates them as they arrive.
    """

    def __init__(
        self,
        annotating: bool,
        started_busy: bool,
        quick: Callable[[], Reading] = quick_reading,
        out: IO[str] | None = None,
    ):
        self.annotating, self.started_busy, self.quick, self.out = annotating, started_busy, quick, out
        self.lines: list[dict] = []
        self.before: Reading | None = None
        self.restart()

    def restart(self) -> None:
        """A new script starts: its first figure's "before" is now."""
        self.before = self.quick() if self.annotating else None

    def emit(self, figure: dict) -> None:
        from bench import goals

        if self.before is not None:
            after = self.quick()
            figure = annotate(figure, self.before, after, self.started_busy)
            self.before = after
        self.lines.append(figure)
        print(json.dumps(figure), flush=True)
        if self.out is not None:
            self.out.write(json.dumps(figure) + "\n")
            self.out.flush()
        if self.annotating:
            for verdict in goals.verdicts(figure):
                print(f"   goal  {verdict.line()}", flush=True)

    def summary(self) -> None:
        """Every verdict of the figures so far, and the ratios whose two figures were both seen."""
        from bench import goals

        verdicts = [v for f in self.lines for v in goals.verdicts(f)] + goals.ratio_verdicts(self.lines)
        if self.annotating and verdicts:
            print("== goals", flush=True)
            for verdict in verdicts:
                print(f"   {verdict.line()}", flush=True)
