"""Crashed runs heal: a run whose run worker died is failed, and its pool slots are freed.

A run worker killed with SIGKILL (``kill -9``, the OOM killer, a lost machine) writes no
``RUN_FAILURE``: its run stays STARTED and keeps the op-concurrency pool slots its steps claimed,
so the next run of the pool waits forever ("Step blocked by limit for pool training"). Who notices:

- **Runs the daemon launched** (UI, automation, sensors, backfills, retries). The code server that
  started the run worker sees it exit within half a second and fails the run; run monitoring
  frees the slots of runs that ended (``run_monitoring.free_slots_after_run_end_seconds``) and run
  retries re-launch it. Dagster 1.13's ``DefaultRunLauncher`` has no worker health check
  (``supports_check_run_worker_health`` is False), so the daemon never fails a run whose code
  server died with it (the whole ``mltrain dev`` killed) nor one it did not launch: ``mltrain dev``
  heals before it starts, and ``mltrain heal`` does it by hand. :class:`PidCheckedRunLauncher`
  gives run monitoring that check (configured as the instance's ``run_launcher``).
- **Runs executed in a process of their own, without a daemon** (``mltrain materialize``,
  ``mltrain demo``, ``dagster asset materialize``). :func:`heal`, which ``cli/demo.py`` runs before
  each launch and ``mltrain heal`` runs on request: each STARTING/STARTED/CANCELING run whose
  worker ran on this host and is gone is failed (the message names the dead pid) and its slots
  freed; slots still held by runs that ended, or by runs that no longer exist, are freed too.

Where a run's worker is: the ``mltrain/run_worker`` tag ``cli/demo.py`` records when it creates a
run (host, boot, pid and the process's start time, so a reused pid is not mistaken for the
worker), or else the pid of the first engine event of the run ("Started process for run (pid: N)",
"Executing steps in process (pid: N)": what ``dagster asset materialize`` and the daemon's run
workers record), trusted as this host's only when the instance's storage is a local SQLite file. A
worker on another host (a K8s run pod on PostgreSQL storage) is left to the daemon's run
monitoring, which checks run pods itself (``K8sRunLauncher.check_run_worker_health``).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, DefaultRunLauncher, RunsFilter

from mltrain_assets.instance.dagster_private import CheckRunHealthResult, JobFailureData, RunFailureReason, WorkerStatus
from mltrain_assets.launch import procfs

RUN_WORKER_TAG = "mltrain/run_worker"
IN_PROGRESS = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
# A process that started this much after the event naming its pid is another process with that pid.
PID_REUSE_SLACK_S = 2.0


@dataclass(frozen=True)
class Worker:
    """The process that executes a run: where it ran, and what tells it from a later process with its pid."""

    pid: int
    host: str | None  # None: this host (the pid came from an event of a local instance)
    boot_id: str | None = None
    start_ticks: int | None = None  # /proc/<pid>/stat field 22, recorded by the worker itself
    seen_at: float | None = None  # when the worker said it was running (an event's timestamp)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host or socket.gethostname()}"


def worker_tag(run_id: str) -> dict[str, str]:
    """The tag naming this process as ``run_id``'s run worker (it executes the run itself)."""
    pid = os.getpid()
    stat = procfs.stat(pid)
    value = {
        "run_id": run_id,  # a retry copies its parent's tags: a tag naming another run is not this run's
        "host": socket.gethostname(),
        "pid": pid,
        "boot_id": procfs.boot_id(),
        "start_ticks": stat.start_ticks if stat else None,
    }
    return {RUN_WORKER_TAG: json.dumps(value, sort_keys=True)}


def worker_of(instance: DagsterInstance, run: DagsterRun, *, local_storage: bool | None = None) -> Worker | None:
    """The run's worker, from our tag or (a local instance) the first engine event that names a pid."""
    text = run.tags.get(RUN_WORKER_TAG)
    if text:
        try:
            value = json.loads(text)
            if value.get("run_id") == run.run_id:
                return Worker(
                    pid=int(value["pid"]),
                    host=str(value["host"]),
                    boot_id=value.get("boot_id"),
                    start_ticks=value.get("start_ticks"),
                )
        except (ValueError, KeyError, TypeError):
            pass
    if not (is_local_storage(instance) if local_storage is None else local_storage):
        return None
    for record in instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=20).records:
        event = record.event_log_entry.dagster_event
        metadata = (getattr(event.event_specific_data, "metadata", None) or {}) if event else {}
        pid = getattr(metadata.get("pid"), "value", metadata.get("pid"))
        if pid is not None:
            try:
                return Worker(pid=int(str(pid)), host=None, seen_at=record.event_log_entry.timestamp)
            except ValueError:
                continue
    return None


def worker_state(worker: Worker) -> tuple[str, str]:
    """``("alive" | "dead" | "unknown", why)`` for a run worker, as seen from this host."""
    if worker.host is not None and worker.host != socket.gethostname():
        return "unknown", f"it ran on {worker.host}, not here: left to the daemon's run monitoring"
    if worker.boot_id and procfs.boot_id() and worker.boot_id != procfs.boot_id():
        return "dead", "this host rebooted since it started"
    try:
        os.kill(worker.pid, 0)
    except ProcessLookupError:
        return "dead", "no such process"
    except PermissionError:
        pass  # another user's process: it exists
    stat = procfs.stat(worker.pid)
    if stat is None:
        return "alive", "the process exists"
    if not stat.running:
        return "dead", "it exited (a zombie awaiting its parent)"
    if worker.start_ticks is not None and stat.start_ticks != worker.start_ticks:
        return "dead", "no such process (its pid now belongs to a later process)"
    started_at = procfs.started_at(stat.start_ticks)
    if worker.seen_at is not None and started_at is not None and started_at > worker.seen_at + PID_REUSE_SLACK_S:
        return "dead", "no such process (its pid now belongs to a later process)"
    return "alive", "the process is running"


@dataclass
class RunVerdict:
    """One in-progress run and what became of it."""

    run_id: str
    job_name: str
    partition: str
    status: str
    worker: str  # what is known of the worker
    state: str  # alive | dead | unknown
    why: str

    def line(self, dry_run: bool = False) -> str:
        where = f"{self.run_id} {self.job_name} {self.partition}".rstrip()
        if self.state == "dead":
            verb = "would mark it" if dry_run else "marked it"
            return f"{where}: {self.status}, but its run worker ({self.worker}) is gone ({self.why}): {verb} FAILURE"
        if self.state == "alive":
            return f"{where}: {self.status}, run worker {self.worker} running"
        return f"{where}: {self.status}, run worker {self.worker}: {self.why}"


@dataclass
class FreedSlots:
    """Pool slots (and waiting step claims) of one run that nobody can use any more."""

    run_id: str
    slots: dict[str, int]  # pool -> slots held
    waiting: dict[str, int]  # pool -> steps queued for a slot
    why: str

    def line(self, dry_run: bool = False) -> str:
        held = [f"{n} {pool} slot{'s' * (n != 1)}" for pool, n in sorted(self.slots.items())]
        held += [f"{n} {pool} claim{'s' * (n != 1)} waiting" for pool, n in sorted(self.waiting.items())]
        verb = "would free" if dry_run else "freed"
        return f"{self.run_id}: {verb} {', '.join(held) or 'its pool claims'} ({self.why})"


@dataclass
class HealReport:
    failed: list[RunVerdict] = field(default_factory=list)  # in progress, worker dead: marked failed
    running: list[RunVerdict] = field(default_factory=list)  # in progress, worker alive
    unknown: list[RunVerdict] = field(default_factory=list)  # in progress, worker elsewhere or not yet known
    freed: list[FreedSlots] = field(default_factory=list)
    dry_run: bool = False

    def lines(self) -> list[str]:
        items: list[RunVerdict | FreedSlots] = [*self.failed, *self.running, *self.unknown, *self.freed]
        return [item.line(self.dry_run) for item in items]


def heal(
    instance: DagsterInstance,
    *,
    dry_run: bool = False,
    by: str = "mltrain heal",
    say: Callable[[str], None] | None = None,
) -> HealReport:
    """Fail this host's runs whose worker is dead and free the pool slots nobody can use any more.

    Slots are freed for: the runs failed here (at once: their steps died with the worker), runs
    that ended longer ago than ``run_monitoring.free_slots_after_run_end_seconds`` (what the
    daemon does) or whose worker is gone, and runs that no longer exist. ``say`` gets a line per
    run failed and per run whose slots were freed.
    """
    report = HealReport(dry_run=dry_run)
    local = is_local_storage(instance)
    for record in instance.get_run_records(RunsFilter(statuses=IN_PROGRESS)):
        run = record.dagster_run
        worker = worker_of(instance, run, local_storage=local)
        if worker is None:
            why = (
                "not known yet (no pid recorded)" if local else "not recorded here: left to the daemon's run monitoring"
            )
            report.unknown.append(_verdict(run, "?", "unknown", why))
            continue
        state, why = worker_state(worker)
        verdict = _verdict(run, worker.describe(), state, why)
        {"alive": report.running, "unknown": report.unknown, "dead": report.failed}[state].append(verdict)
        if state == "dead":
            if not dry_run:
                _fail(instance, run.run_id, f"Run worker {worker.describe()} is gone ({why}): marked failed by {by}.")
            if say:
                say(verdict.line(dry_run))
    for freed in _unusable_slots(instance, {v.run_id for v in report.failed}, local):
        if not dry_run:
            instance.event_log_storage.free_concurrency_slots_for_run(freed.run_id)
        report.freed.append(freed)
        if say:
            say(freed.line(dry_run))
    return report


def _verdict(run: DagsterRun, worker: str, state: str, why: str) -> RunVerdict:
    return RunVerdict(
        run_id=run.run_id,
        job_name=run.job_name,
        partition=run.tags.get("dagster/partition", ""),
        status=run.status.value,
        worker=worker,
        state=state,
        why=why,
    )


def _fail(instance: DagsterInstance, run_id: str, message: str) -> None:
    run = instance.get_run_by_id(run_id)  # re-read: another sweep (or the code server) may have ended it
    if run is None or run.is_finished:
        return
    if run.status == DagsterRunStatus.CANCELING:
        instance.report_run_canceled(run, message)
    else:
        instance.report_run_failed(
            run, message, JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION)
        )


def pool_holdings(instance: DagsterInstance) -> dict[str, tuple[Counter, Counter]]:
    """``{run_id: (slots held per pool, steps waiting per pool)}`` over every pool."""
    storage = instance.event_log_storage
    holdings: dict[str, tuple[Counter, Counter]] = {}
    if not storage.supports_global_concurrency_limits:
        return holdings
    keys = storage.get_concurrency_keys()
    for info in storage.get_concurrency_infos(sorted(keys)).values() if keys else []:
        for slot in info.claimed_slots:
            holdings.setdefault(slot.run_id, (Counter(), Counter()))[0][info.concurrency_key] += 1
        for step in info.pending_steps:
            if step.assigned_timestamp is None:  # an assigned pending step holds the slot counted above
                holdings.setdefault(step.run_id, (Counter(), Counter()))[1][info.concurrency_key] += 1
    return holdings


def _unusable_slots(instance: DagsterInstance, dead: set[str], local: bool) -> list[FreedSlots]:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    run_ids = storage.get_concurrency_run_ids()  # runs with a slot or a step queued for one
    if not run_ids:
        return []
    holdings = pool_holdings(instance)
    delay = float(instance.run_monitoring_settings.get("free_slots_after_run_end_seconds") or 0)
    records = {r.dagster_run.run_id: r for r in instance.get_run_records(RunsFilter(run_ids=list(run_ids)))}
    now = time.time()
    unusable = []
    for run_id in sorted(run_ids):
        record = records.get(run_id)
        if run_id in dead:
            why = "its run worker is gone"
        elif record is None:
            why = "the run no longer exists"
        elif not record.dagster_run.is_finished:
            continue
        elif record.end_time is not None and record.end_time + delay < now:
            why = f"the run ended ({record.dagster_run.status.value}) over {delay:.0f}s ago"
        else:
            worker = worker_of(instance, record.dagster_run, local_storage=local)
            if worker is None or worker_state(worker)[0] != "dead":
                continue  # just ended, its worker may still be letting go: a later sweep frees them
            why = f"the run ended ({record.dagster_run.status.value}) and its run worker is gone"
        slots, waiting = holdings.get(run_id, (Counter(), Counter()))
        unusable.append(FreedSlots(run_id, dict(slots), dict(waiting), why))
    return unusable


def is_local_storage(instance: DagsterInstance) -> bool:
    """Whether the run storage is a SQLite file, written only by processes on this host.

    Read from the public ``instance.run_storage``: its class (``SqliteRunStorage`` for the default
    storage and ``storage: sqlite``; ``PostgresRunStorage``, ``InMemoryRunStorage`` otherwise), and
    for a storage that wraps another one (Dagster's ``LegacyRunStorage``), the class it was
    configured with: its ``inst_data`` (what ``dagster instance info`` prints), whose config names
    the wrapped storage's class.
    """
    storage = instance.run_storage
    names = [type(storage).__name__]
    data = getattr(storage, "inst_data", None)  # ConfigurableClass: the class and config it was built from
    if data is not None:
        names.append(str(data.class_name))
        try:
            config = yaml.safe_load(data.config_yaml or "")
        except yaml.YAMLError:
            config = None
        if isinstance(config, dict):
            names.append(str(config.get("class_name") or ""))
    return any("sqlite" in name.lower() for name in names)


class PidCheckedRunLauncher(DefaultRunLauncher):
    """Dagster's ``DefaultRunLauncher`` plus the worker health check run monitoring asks for.

    ``DefaultRunLauncher`` has none in 1.13, so the daemon's run monitoring never fails a STARTED
    run whose worker died unless the code server that started it noticed: not a run of
    ``dagster asset materialize`` / ``mltrain materialize`` killed while a daemon runs, nor a daemon
    run whose code server died too. With ``run_launcher: {module: mltrain_assets.instance.heal, class:
    PidCheckedRunLauncher}`` in ``dagster.yaml`` the monitoring daemon checks each STARTED run's worker
    as :func:`heal` does, every ``run_monitoring.poll_interval_seconds``: a worker that is gone
    fails the run (then its slots are freed and run retries apply); one that is alive, elsewhere or
    not known yet counts as running (never a false failure).
    """

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = worker_of(self._instance, run)
        if worker is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker not known yet")
        state, why = worker_state(worker)
        if state == "dead":
            return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker {worker.describe()} is gone ({why})")
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker {worker.describe()}: {why}")
