"""Crashes heal: a killed process leaves no stuck run, held pool slot, live workload or half-commit.

Each test kills one kind of process with SIGKILL while a step is mid-write, then checks what the
next user meets: the dead run is FAILURE with a reason naming the dead process, the pool's slots
are free, no process of the workload's session is left, the version folder holds no manifest
(the dead writer's claim and partial file only, never a half-written commit), and the next run of
the same partition breaks the claim and commits.

The process kinds: the run worker of a run launched by ``cli/demo.execute`` (``mltrain
materialize``/``mltrain demo``) and by ``dagster asset materialize``; the workload; a
multiprocess-executor step process; and, under a real daemon, the run worker the daemon's code
server started. The project's jobs use the in-process executor, so their "step process" *is* the
run worker: killing it is the first test's case.

The pool ``crash_test`` has limit 1, so a slot leaked by a dead run would block the next run
forever ("Step blocked by limit for pool crash_test"). This module is also the test code
location (``defs``) and the test workload (``python -m mltrain_assets_tests.instance.test_crash_recovery``).
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dagster import (
    AssetExecutionContext,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    MaterializeResult,
    RetryPolicy,
    RunsFilter,
    StaticPartitionsDefinition,
    asset,
    define_asset_job,
    in_process_executor,
    multiprocess_executor,
)

from mltrain_assets.artifacts import CLAIM_NAME, MANIFEST_NAME, ArtifactWriter, read_manifest
from mltrain_assets.resources.compute import Compute
from mltrain_assets.resources.deployments import LocalCompute
from mltrain_assets.workloads.common.params import WorkloadParams, runtime
from mltrain_assets.workloads.common.runtime import Reporter, workload_main

MODULE = "mltrain_assets_tests.instance.test_crash_recovery"
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POOL = "crash_test"
CONTROL_ENV = "MLTRAIN_CRASH_TEST_DIR"  # where the asset and its workload write pids and versions
PARTITIONS = StaticPartitionsDefinition(["p1", "p2"])
WAIT_S = 120  # bound on every wait below (a failure, never a timing assertion)


# ------------------------------------------------------------------ the workload


@dataclasses.dataclass(frozen=True, kw_only=True)
class SlowCommitParams(WorkloadParams):
    """Claims its version, writes one file, waits while ``<control>/hold`` exists, writes another, commits.

    Meanwhile a child of its own runs in its session (as a local Spark JVM or a torchrun agent does).
    """

    module = MODULE

    partition: str = "p1"
    control_dir: str = runtime(default="")


def _write_atomically(path: Path, text: str) -> None:
    path.with_suffix(".tmp").write_text(text)
    os.replace(path.with_suffix(".tmp"), path)


def body(params: SlowCommitParams, reporter: Reporter) -> dict:
    control = Path(params.control_dir)
    helper = subprocess.Popen([sys.executable, "-I", "-S", "-c", f"import time; time.sleep({WAIT_S})"])
    writer = ArtifactWriter(params.out_uri, producer=MODULE, code_version="1")
    writer.write_json("part-0.json", {"partition": params.partition})
    _write_atomically(control / f"workload-{params.partition}.pid", str(os.getpid()))  # mid-write from here
    deadline = time.monotonic() + WAIT_S
    while (control / "hold").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    helper.kill()
    helper.wait()
    writer.write_json("part-1.json", {"partition": params.partition})
    return writer.commit(summary={"partition": params.partition})["summary"]


main = workload_main(SlowCommitParams, body)


# ------------------------------------------------------------------ the code location


def version_uri(control: Path, partition: str) -> str:
    return (control / "store" / partition / "v1").as_uri()


@asset(partitions_def=PARTITIONS, pool=POOL, retry_policy=RetryPolicy(max_retries=1))
def slow_commit(context: AssetExecutionContext, compute: Compute) -> MaterializeResult:
    control = Path(os.environ[CONTROL_ENV])
    main_thread = threading.current_thread() is threading.main_thread()
    _write_atomically(
        control / f"step-{context.partition_key}.json", json.dumps({"pid": os.getpid(), "main_thread": main_thread})
    )
    params = SlowCommitParams(
        partition=context.partition_key, control_dir=str(control), out_uri=version_uri(control, context.partition_key)
    )
    result = compute.run(context, params, timeout_s=300)
    return MaterializeResult(metadata={"launched_from_main_thread": main_thread, **result.summary})


slow_commit_job = define_asset_job("slow_commit_job", [slow_commit], executor_def=in_process_executor)
slow_commit_mp_job = define_asset_job("slow_commit_mp_job", [slow_commit], executor_def=multiprocess_executor)
defs = Definitions(
    assets=[slow_commit],
    jobs=[slow_commit_job, slow_commit_mp_job],
    resources={"compute": LocalCompute()},
    executor=in_process_executor,  # as the project's definitions: `dagster asset materialize` runs steps in process
)


# ------------------------------------------------------------------ helpers


def _session(sid: int) -> list[int]:
    """Live processes of a session (zombies excluded)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry))
    return members


def _wait_for(predicate, what: str, timeout_s: float = WAIT_S, process: subprocess.Popen | None = None, log=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"exited ({process.returncode}) before {what}: {_tail(log)}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}: {_tail(log)}")


def _tail(log: Path | None) -> str:
    return log.read_text()[-3000:] if log is not None and log.exists() else ""


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _slots(instance: DagsterInstance) -> tuple[int, int]:
    """(claimed slots, steps waiting) of the test pool."""
    info = instance.event_log_storage.get_concurrency_info(POOL)
    return info.active_slot_count, info.pending_step_count


def _latest_run(instance: DagsterInstance, job_name: str | None = None):
    runs = instance.get_runs(RunsFilter(job_name=job_name) if job_name else None, limit=1)
    return runs[0] if runs else None


def _failure_message(instance: DagsterInstance, run_id: str) -> str:
    events = instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)
    return events[-1].message if events else ""


def _claim(control: Path, partition: str) -> dict | None:
    try:
        return json.loads((control / "store" / partition / "v1" / CLAIM_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _assert_half_written(control: Path, partition: str, dead_pid: int) -> None:
    """The dead writer left its claim and a partial file; nothing reads as committed."""
    folder = control / "store" / partition / "v1"
    assert read_manifest(version_uri(control, partition)) is None
    assert not (folder / MANIFEST_NAME).exists()
    assert json.loads((folder / CLAIM_NAME).read_text())["pid"] == dead_pid
    assert (folder / "part-0.json").exists()


def _assert_committed(control: Path, partition: str) -> None:
    """The next writer broke the claim, cleared the partial attempt and committed every file."""
    folder = control / "store" / partition / "v1"
    manifest = read_manifest(version_uri(control, partition))
    assert manifest is not None
    assert sorted(manifest["files"]) == ["part-0.json", "part-1.json"]
    assert all((folder / name).exists() for name in manifest["files"])
    assert not (folder / CLAIM_NAME).exists()


@pytest.fixture
def crash_env(mltrain_home, tmp_path, monkeypatch):
    """An instance whose ``crash_test`` pool has one slot, a control folder, and this module as the definitions."""
    from mltrain_assets.cli import demo

    control = tmp_path / "control"
    control.mkdir()
    monkeypatch.setenv(CONTROL_ENV, str(control))
    monkeypatch.setattr(demo, "DEFINITIONS_MODULE", MODULE)
    instance = demo.ensure_instance()
    instance.event_log_storage.set_concurrency_slots(POOL, 1)
    started: list[subprocess.Popen] = []
    yield instance, control, started
    (control / "hold").unlink(missing_ok=True)
    for process in started:  # whatever a failing test left running, by its own process group
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    instance.dispose()


def _start(started: list, command: list[str], log: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        command, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    started.append(process)
    return process


def _run_worker_command(job_name: str, partition: str) -> list[str]:
    """A run worker as ``mltrain materialize`` runs one: ``demo.execute`` in a process of its own."""
    script = (
        "from mltrain_assets.cli import demo\n"
        f"demo.DEFINITIONS_MODULE = {MODULE!r}\n"
        f"outcome = demo.execute({job_name!r}, 'crash test', partition_key={partition!r}, launched_by='crash test')\n"
        "print('outcome', outcome.success, outcome.error)\n"
    )
    return [sys.executable, "-c", script]


def _next_run_completes(control: Path, partition: str):
    """The next run of the partition, in this process (as `mltrain materialize`): its pre-launch check runs first."""
    from mltrain_assets.cli import demo

    (control / "hold").unlink(missing_ok=True)
    outcome = demo.execute("slow_commit_job", "next run", partition_key=partition, launched_by="crash test")
    assert outcome.success, outcome.error
    _assert_committed(control, partition)
    return outcome


# ------------------------------------------------------------------ the pieces


def test_a_run_worker_is_told_apart_from_a_dead_or_reused_pid_and_from_another_host():
    from mltrain_assets.instance import heal

    here = json.loads(heal.worker_tag("run-1")[heal.RUN_WORKER_TAG])
    me = heal.Worker(pid=here["pid"], host=here["host"], boot_id=here["boot_id"], start_ticks=here["start_ticks"])
    assert heal.worker_state(me)[0] == "alive"
    assert heal.worker_state(dataclasses.replace(me, start_ticks=me.start_ticks - 1)) == (
        "dead",
        "no such process (its pid now belongs to a later process)",
    )
    assert heal.worker_state(dataclasses.replace(me, boot_id="another-boot"))[0] == "dead"
    assert heal.worker_state(dataclasses.replace(me, host="elsewhere"))[0] == "unknown"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert heal.worker_state(heal.Worker(pid=gone.pid, host=None)) == ("dead", "no such process")
    # A pid seen in an event before its current process started is another process's.
    assert heal.worker_state(heal.Worker(pid=os.getpid(), host=None, seen_at=0.0))[0] == "dead"


def test_a_worker_tag_copied_into_a_retry_names_no_worker_of_the_retry(crash_env):
    """Retries copy their parent's tags: the tag names the run it was written for."""
    from dagster._core.test_utils import create_run_for_test
    from dagster._core.utils import make_new_run_id

    from mltrain_assets.instance import heal

    instance, _, _ = crash_env
    parent = create_run_for_test(instance, job_name="slow_commit_job", run_id=make_new_run_id())
    child = create_run_for_test(instance, job_name="slow_commit_job", tags=heal.worker_tag(parent.run_id))
    assert heal.worker_of(instance, child) is None  # no tag of its own, no engine event with a pid yet
    own = make_new_run_id()
    assert heal.worker_of(instance, create_run_for_test(instance, tags=heal.worker_tag(own), run_id=own)).pid == (
        os.getpid()
    )


def test_the_pid_checked_launcher_lets_run_monitoring_fail_a_run_whose_worker_is_gone(tmp_path):
    """``DefaultRunLauncher`` gives run monitoring no health check; ``PidCheckedRunLauncher`` (not wired
    in the shipped dagster.yaml) does: Dagster's own ``monitor_started_run`` fails the dead run only."""
    import logging

    from dagster._core.test_utils import create_run_for_test, instance_for_test
    from dagster._core.utils import make_new_run_id
    from dagster._daemon.monitoring.run_monitoring import monitor_started_run

    from mltrain_assets.instance import heal

    launcher = {"module": "mltrain_assets.instance.heal", "class": "PidCheckedRunLauncher"}
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with instance_for_test(overrides={"run_launcher": launcher}) as instance:
        assert instance.run_launcher.supports_check_run_worker_health
        runs = {}
        for name, pid in (("dead", gone.pid), ("alive", os.getpid())):
            run_id = make_new_run_id()
            tag = json.loads(heal.worker_tag(run_id)[heal.RUN_WORKER_TAG])
            tag.update(pid=pid, start_ticks=None)
            tags = {heal.RUN_WORKER_TAG: json.dumps(tag)}
            runs[name] = create_run_for_test(instance, run_id=run_id, status=DagsterRunStatus.STARTED, tags=tags)
        for run in runs.values():
            monitor_started_run(instance, None, instance.get_run_record_by_id(run.run_id), logging.getLogger("test"))
        assert instance.get_run_by_id(runs["alive"].run_id).status == DagsterRunStatus.STARTED
        assert instance.get_run_by_id(runs["dead"].run_id).status == DagsterRunStatus.FAILURE
        assert f"pid {gone.pid}" in _failure_message(instance, runs["dead"].run_id)


def test_a_workload_is_killed_when_the_thread_that_started_it_exits():
    """``PR_SET_PDEATHSIG`` follows the launching *thread*: a workload outlives nothing but the
    thread waiting for it (``launch/supervisor._wait``), which in the run worker is its main thread (asserted in the
    first kill test below)."""
    from mltrain_assets.launch.supervisor import _die_with_parent_thread

    started = []

    def launch():
        started.append(subprocess.Popen(["sleep", "60"], preexec_fn=_die_with_parent_thread))

    thread = threading.Thread(target=launch)
    thread.start()
    thread.join()
    assert started[0].wait(timeout=WAIT_S) == -signal.SIGKILL


# ------------------------------------------------------------------ without a daemon


@pytest.mark.timeout(300)
def test_killed_run_worker_is_failed_and_its_slot_freed_before_the_next_launch(crash_env, tmp_path, capfd):
    """``mltrain materialize``'s run worker (which is also the step process: in-process executor) killed mid-write.

    Its workload dies with it (nothing can commit after the run is failed); the next launch's
    pre-launch check fails the run naming the dead pid and frees its slot; the next run commits.
    """
    instance, control, started = crash_env
    (control / "hold").touch()
    log = tmp_path / "worker.log"
    worker = _start(started, _run_worker_command("slow_commit_job", "p1"), log)
    workload = _wait_for(lambda: _read_pid(control / "workload-p1.pid"), "the workload", process=worker, log=log)
    step = json.loads((control / "step-p1.json").read_text())
    assert step["pid"] == worker.pid and step["main_thread"]  # PR_SET_PDEATHSIG follows this thread
    run = _latest_run(instance)
    assert run.status == DagsterRunStatus.STARTED and _slots(instance) == (1, 0)

    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    _wait_for(lambda: not _session(workload), "the workload to die with its run worker")
    # Nobody has noticed yet: the run looks alive and holds the pool's only slot.
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
    assert _slots(instance) == (1, 0)
    _assert_half_written(control, "p1", workload)

    outcome = _next_run_completes(control, "p1")
    failed = instance.get_run_by_id(run.run_id)
    assert failed.status == DagsterRunStatus.FAILURE
    message = _failure_message(instance, run.run_id)
    assert f"pid {worker.pid}" in message and "pre-launch check of crash test" in message
    assert f"heal: {run.run_id}" in capfd.readouterr().err  # the sweep said what it did
    assert outcome.run_id != run.run_id and _slots(instance) == (0, 0)


@pytest.mark.timeout(300)
def test_killed_dagster_asset_materialize_is_healed_by_mltrain_heal(crash_env, tmp_path, capsys):
    """Plain ``dagster asset materialize`` has no hook of ours: ``mltrain heal`` finds its dead worker by the
    pid Dagster records ("Executing steps in process (pid: N)"), fails the run and frees its slot."""
    from mltrain_assets.cli import main as mltrain

    instance, control, started = crash_env
    (control / "hold").touch()
    log = tmp_path / "dagster.log"
    command = [
        str(BIN / "dagster"),
        "asset",
        "materialize",
        "-m",
        MODULE,
        "--select",
        "slow_commit",
        "--partition",
        "p2",
    ]
    cli = _start(started, command, log)
    workload = _wait_for(lambda: _read_pid(control / "workload-p2.pid"), "the workload", process=cli, log=log)
    run = _latest_run(instance)
    os.kill(cli.pid, signal.SIGKILL)
    cli.wait()
    _wait_for(lambda: not _session(workload), "the workload to die with its run worker")
    assert _slots(instance) == (1, 0)
    _assert_half_written(control, "p2", workload)

    assert mltrain(["heal", "--dry-run"]) == 0
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED  # a dry run changes nothing
    assert mltrain(["heal"]) == 0
    printed = capsys.readouterr().out
    assert f"{run.run_id} __ASSET_JOB p2: STARTED, but its run worker (pid {cli.pid}" in printed
    assert f"{run.run_id}: freed 1 {POOL} slot" in printed
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
    assert f"pid {cli.pid}" in _failure_message(instance, run.run_id)
    assert _slots(instance) == (0, 0)
    _next_run_completes(control, "p2")


def _retried_and_committed(instance, control: Path, partition: str, first: int, worker, log: Path) -> None:
    """The step's retry launched a new workload whose writer broke the dead writer's claim; the run succeeds."""
    pid_file = control / f"workload-{partition}.pid"
    retry = _wait_for(lambda: (_read_pid(pid_file) or first) != first and _read_pid(pid_file), "the retry's workload")
    claim = _wait_for(lambda: _claim(control, partition), "a readable claim")  # its heartbeat rewrites it
    assert claim["pid"] == retry  # the dead writer's claim was broken by the next writer
    (control / "hold").unlink()
    assert worker.wait(timeout=WAIT_S) == 0, _tail(log)
    run = _latest_run(instance)
    assert run.status == DagsterRunStatus.SUCCESS
    assert _slots(instance) == (0, 0)
    _assert_committed(control, partition)
    retries = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
    assert len(retries) == 1


@pytest.mark.timeout(300)
def test_killed_workload_is_retried_and_the_retry_breaks_its_claim(crash_env, tmp_path):
    """The workload killed mid-write: the run worker sees exit code -9 and kills what is left of the
    workload's group, the step retries, the retry's writer breaks the dead writer's claim (its pid is
    gone) and commits; the run succeeds and frees its slot."""
    instance, control, started = crash_env
    (control / "hold").touch()
    log = tmp_path / "worker.log"
    worker = _start(started, _run_worker_command("slow_commit_job", "p1"), log)
    first = _wait_for(lambda: _read_pid(control / "workload-p1.pid"), "the workload", process=worker, log=log)
    os.kill(first, signal.SIGKILL)
    killed_at = time.time()
    _retried_and_committed(instance, control, "p1", first, worker, log)
    assert not _session(first)
    run = _latest_run(instance)
    retry = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)[0]
    assert "exit code -9" in str(retry.dagster_event.event_specific_data.error)
    print(f"workload killed: step failed (up for retry) {retry.timestamp - killed_at:.2f}s after the kill")


@pytest.mark.timeout(300)
def test_killed_multiprocess_step_process_takes_its_workload_and_is_retried(crash_env, tmp_path):
    """With the multiprocess executor the step runs in a child of the run worker. Killed, its workload dies
    with it (the guard), the run worker reports the crash and retries the step (Dagster applies the
    step's RetryPolicy to a crashed step process); the retry breaks the claim and commits."""
    instance, control, started = crash_env
    (control / "hold").touch()
    log = tmp_path / "worker.log"
    worker = _start(started, _run_worker_command("slow_commit_mp_job", "p2"), log)
    first = _wait_for(lambda: _read_pid(control / "workload-p2.pid"), "the workload", process=worker, log=log)
    step = json.loads((control / "step-p2.json").read_text())["pid"]
    assert step != worker.pid
    os.kill(step, signal.SIGKILL)
    killed_at = time.time()
    _wait_for(lambda: not _session(first), "the workload to die with its step process")
    _retried_and_committed(instance, control, "p2", first, worker, log)
    run = _latest_run(instance)
    engine = " ".join(e.message for e in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT))
    assert "terminated by signal 9" in engine
    retry = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)[0]
    print(f"step process killed: step up for retry {retry.timestamp - killed_at:.2f}s after the kill")


# ------------------------------------------------------------------ under the daemon


def _submit(instance: DagsterInstance, workspace: Path, partition: str) -> str:
    """Queue a run of ``slow_commit_job`` for the daemon, as a UI launch does (origin: the test location)."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
    from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
    from dagster._core.run_coordinator import SubmitRunContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    (origin,) = WorkspaceFileTarget(paths=[str(workspace)]).create_origins()
    recon = ReconstructableRepository.for_module(MODULE, "defs", working_directory=str(REPO))
    recon_job = recon.get_reconstructable_job("slow_commit_job")
    job_def = recon_job.get_definition()
    run = instance.create_run_for_job(
        job_def=job_def,
        tags=job_def.get_tags_for_partition_key(partition, selected_asset_keys=None),
        remote_job_origin=RemoteJobOrigin(RemoteRepositoryOrigin(origin, SINGLETON_REPOSITORY_NAME), job_def.name),
        job_code_origin=recon_job.get_python_origin(),
    )
    instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))
    return run.run_id


@pytest.mark.e2e
@pytest.mark.timeout(400)
def test_daemon_fails_a_killed_run_worker_frees_its_slot_and_retries(crash_env, tmp_path):
    """Under the daemon (the repository's dagster.yaml): the code server that started the run worker fails
    the run when it dies, run monitoring frees its slot (``free_slots_after_run_end_seconds``) and run
    retries re-launch it; the retry waits in the queue for the slot, breaks the claim and commits."""
    from mltrain_assets.cli.devstack import DevStack

    instance, control, _ = crash_env
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        f"  - python_module: {{module_name: {MODULE}, location_name: crash_test, working_directory: {REPO}}}\n"
    )
    (control / "hold").touch()
    with DevStack(webserver=False, mlflow_ui=False, workspace=workspace) as stack:
        log = stack.services[0].log_path
        run_id = _submit(instance, workspace, "p1")
        workload = _wait_for(lambda: _read_pid(control / "workload-p1.pid"), "the daemon's run to start", log=log)
        worker = json.loads((control / "step-p1.json").read_text())["pid"]
        os.kill(worker, signal.SIGKILL)
        killed, killed_at = time.monotonic(), time.time()
        _wait_for(lambda: not _session(workload), "the workload to die with its run worker")
        failed = _wait_for(
            lambda: instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE, "the run's failure", log=log
        )
        detected = time.monotonic() - killed
        assert failed and "terminated by signal 9 (SIGKILL)" in " ".join(
            e.message for e in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)
        )
        _assert_half_written(control, "p1", workload)
        (control / "hold").unlink()
        retry = _wait_for(
            lambda: next(
                (r for r in instance.get_runs(RunsFilter(tags={"dagster/parent_run_id": run_id})) if r.is_finished),
                None,
            ),
            "the retry to finish",
            log=log,
            timeout_s=180,
        )
        recovered = time.monotonic() - killed
        assert retry.status == DagsterRunStatus.SUCCESS, _tail(log)
        assert _slots(instance) == (0, 0)
        _assert_committed(control, "p1")
        # The retry queued at once and started when monitoring freed the slot: when that happened.
        slot_back = instance.get_run_record_by_id(retry.run_id).start_time - killed_at
    print(f"daemon: failed {detected:.1f}s, slot free {slot_back:.1f}s, retry done {recovered:.1f}s after the kill")


if __name__ == "__main__":
    sys.exit(main())
