"""Nothing outlives its run: the workload objects of a run that ended, or no longer exists, are reaped.

On k8s-local a killed run worker leaves its launch's record and whatever its pod started that escaped
the kill; ``mltrain heal`` fails the run, then kills those processes and deletes the record, naming
them. On a cluster the same reaper lists Pods, Jobs and Services by label through the kubernetes client
(against a local stand-in for the API server) and deletes those of ended or missing runs. This module
is also the test code location (``defs``) for ``dagster asset materialize``.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import kubernetes
import pytest
from dagster import (
    AssetExecutionContext,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    Definitions,
    MaterializeResult,
    asset,
    in_process_executor,
)

from mltrain_assets.instance.reap import ClusterObjects, LocalObjects, reap
from mltrain_assets.launch import local_objects
from mltrain_assets.launch.protocol import RUN_ID_LABEL
from mltrain_assets.resources.compute import Compute
from mltrain_assets.resources.deployments import KubernetesHereCompute
from mltrain_assets.resources.k8s import PodTemplate, render_indexed_job, render_pod
from mltrain_assets_tests.resources.fake_apiserver import FakeApiServer
from mltrain_assets_tests.resources.sample_workload import SampleParams

MODULE = "mltrain_assets_tests.instance.test_reap"
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PID_ENV = "MLTRAIN_REAP_TEST_PID_FILE"
WAIT_S = 120  # bound on every wait (a failure, never a timing assertion)


@asset
def hanging(context: AssetExecutionContext, compute: Compute) -> MaterializeResult:
    """A pod whose workload starts a child that ignores SIGTERM (as a busy Spark JVM may) and hangs."""
    compute.run(context, SampleParams(mode="hang", pid_file=os.environ[PID_ENV]), timeout_s=300)
    return MaterializeResult()


defs = Definitions(assets=[hanging], resources={"compute": KubernetesHereCompute()}, executor=in_process_executor)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _wait_for(predicate, what: str, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        assert process.poll() is None, f"exited {process.returncode} before {what}:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {WAIT_S}s:\n{log.read_text()[-3000:]}")


@pytest.mark.timeout(300)
def test_a_killed_run_workers_k8s_local_objects_are_reaped_by_mltrain_heal(mltrain_home, tmp_path, monkeypatch, capsys):
    from mltrain_assets.cli import demo
    from mltrain_assets.cli import main as mltrain

    instance = demo.ensure_instance()
    pid_file = tmp_path / "child.pid"
    monkeypatch.setenv(PID_ENV, str(pid_file))
    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [str(BIN / "dagster"), "asset", "materialize", "-m", MODULE, "--select", "hanging"],
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    child = 0
    try:
        child = int(_wait_for(lambda: pid_file.exists() and pid_file.read_text(), "workload child", worker, log))
        (record,) = local_objects.records()
        assert record.path.parent == mltrain_home / "k8s-local" / "objects"
        assert [o["kind"] for o in record.objects] == ["Pod"] and record.name == record.objects[0]["metadata"]["name"]
        run = instance.get_run_by_id(record.run_id)  # the record names its run (the pod's dagster/run-id label)
        assert run is not None and run.status == DagsterRunStatus.STARTED
        # The worst case: the guard gone too, so only the pod's leader dies with the run worker (PDEATHSIG).
        (guard,) = [pid for pid in _children(worker.pid) if "mltrain_assets.launch.guard" in _cmdline(pid)]
        os.kill(guard, signal.SIGKILL)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        time.sleep(1)  # the kernel's PDEATHSIG reaches the leader at once; the child stays
        assert _alive(child), "the workload's child outlived its run worker (what the reaper is for)"
        assert record.path.exists()

        assert mltrain(["heal", "--dry-run"]) == 0
        assert _alive(child) and record.path.exists()  # a dry run changes nothing
        capsys.readouterr()
        assert mltrain(["heal"]) == 0
        printed = capsys.readouterr().out
        pod = f"Pod mltrain/{record.name}"
        assert f"{run.run_id}: deleted k8s-local {pod} (killed process group" in printed, printed
        assert "its run ended (FAILURE)" in printed
        assert "deleted 1 workload object(s) of ended runs" in printed
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
        assert local_objects.records() == [] and not record.path.exists()
        assert reap(instance, [LocalObjects()]) == []  # nothing left to reap
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)
        instance.dispose()


def test_a_launch_that_ends_leaves_no_record(mltrain_home, tmp_path):
    from dagster import materialize

    pid_file = tmp_path / "unused.pid"

    @asset
    def quick(context: AssetExecutionContext, compute: Compute) -> MaterializeResult:
        seen = []
        original = local_objects.recorded

        def spying(objects, processes):  # the record exists while the pod runs
            with original(objects, processes) as marked:
                seen.append([r.name for r in local_objects.records()])
                yield marked

        import contextlib

        from mltrain_assets.launch import local

        local.recorded = contextlib.contextmanager(spying)
        try:
            compute.run(context, SampleParams(pid_file=str(pid_file)), timeout_s=120)
        finally:
            local.recorded = original
        assert len(seen) == 1 and len(seen[0]) == 1
        return MaterializeResult()

    assert materialize([quick], resources={"compute": KubernetesHereCompute()}).success
    assert local_objects.records() == []


# ------------------------------------------------------------------ the cluster backend


def _template(run_id: str) -> PodTemplate:
    return PodTemplate(image="registry.example.com/mltrain:1", namespace="ml", labels={RUN_ID_LABEL: run_id})


def test_the_cluster_backend_deletes_the_objects_of_ended_and_missing_runs_only():
    instance = DagsterInstance.ephemeral()
    ended = instance.add_run(
        DagsterRun(job_name="j", run_id="aaaaaaaa-0000-4000-8000-000000000001", status=DagsterRunStatus.FAILURE)
    )
    running = instance.add_run(
        DagsterRun(job_name="j", run_id="bbbbbbbb-0000-4000-8000-000000000002", status=DagsterRunStatus.STARTED)
    )
    missing = "cccccccc-0000-4000-8000-000000000003"
    with FakeApiServer() as server:
        configuration = kubernetes.client.Configuration()
        configuration.host = server.url
        client = kubernetes.client.ApiClient(configuration)
        core, batch = kubernetes.client.CoreV1Api(client), kubernetes.client.BatchV1Api(client)
        for run_id, name in ((ended.run_id, "ended"), (running.run_id, "running"), (missing, "missing")):
            core.create_namespaced_pod("ml", render_pod(_template(run_id), name=f"pod-{name}", command=["x"], env={}))
        service, job = render_indexed_job(
            _template(ended.run_id), name="job-ended", nodes=2, command=["x"], env={}, port=1
        )
        core.create_namespaced_service("ml", service)
        batch.create_namespaced_job("ml", job)
        stranger = {"metadata": {"name": "not-ours"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
        core.create_namespaced_pod("ml", stranger)

        lines: list[str] = []
        reaped = reap(instance, [ClusterObjects(core, batch, "ml")], say=lines.append)

        assert sorted(r.obj.describe() for r in reaped) == [
            "Job ml/job-ended",
            "Pod ml/pod-ended",
            "Pod ml/pod-missing",
            "Service ml/job-ended",
        ]
        assert f"{ended.run_id}: deleted Job ml/job-ended (and its pods): its run ended (FAILURE)" in lines
        assert f"{missing}: deleted Pod ml/pod-missing: its run no longer exists" in lines
        # The Job's pods went with it (Background propagation), not one by one.
        (job_delete,) = server.received("DELETE", "/jobs/job-ended")
        assert job_delete.body["propagationPolicy"] == "Background"
        assert not server.received("DELETE", "/pods/job-ended")
        left = sorted(name for (resource, _, name) in server.objects if resource in ("pods", "services", "jobs"))
        assert left == ["not-ours", "pod-running"]
        assert reap(instance, [ClusterObjects(core, batch, "ml")]) == []


def test_the_reaper_sensor_reaps_what_a_vanished_run_left(mltrain_home):
    """The code location's periodic check: a k8s-local record of a run the instance does not know is removed."""
    from dagster import build_sensor_context

    from mltrain_assets.instance.reap import workload_reaper

    pod = render_pod(_template("dddddddd-0000-4000-8000-000000000004"), name="pod-gone", command=["x"], env={})
    with local_objects.recorded([pod], []):
        (record,) = local_objects.records()
        record.path.rename(record.path.with_name("kept.json"))  # as if its run worker died before removing it
    with DagsterInstance.ephemeral() as instance:
        result = workload_reaper(build_sensor_context(instance=instance))
    assert "deleted k8s-local Pod ml/pod-gone (no process left): its run no longer exists" in str(result.skip_message)
    assert local_objects.records() == []
