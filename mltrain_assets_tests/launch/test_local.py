"""The local launchers and the one /proc reader, without Dagster."""

import math
import os
import sys

import pytest

from mltrain_assets.launch import KubernetesHere, Launch, LaunchTimeout, LocalProcess, procfs
from mltrain_assets.launch.local import local_pods
from mltrain_assets.resources.k8s import PodTemplate, render_indexed_job


def test_a_local_process_reports_its_exit_and_what_it_cost():
    # Holds 200 MiB for a second of CPU: long enough for /proc sampling to see it whatever the run worker's size.
    code = (
        "import sys, time; x = bytearray(200 * 1024 * 1024); t = time.process_time()\n"
        "while time.process_time() - t < 1.0: pass\n"
        "sys.exit(3)"
    )
    result = LocalProcess(ok_exits=(0, 3)).launch(
        Launch(workload="probe", command=["python", "-c", code], timeout_s=60)
    )
    assert result.returncodes == [3]
    assert result.usage.cpu_s >= 1.0 and result.usage.peak_rss_mb >= 200
    assert result.usage.measured == "wait4 + /proc"


def test_a_local_process_past_its_timeout_is_killed():
    with pytest.raises(LaunchTimeout, match="timed out after 1s"):
        LocalProcess().launch(
            Launch(workload="probe", command=["python", "-c", "import time; time.sleep(60)"], timeout_s=1)
        )


def test_the_pods_of_an_indexed_job_run_here_each_with_its_index(tmp_path):
    record = tmp_path / "pods.txt"
    code = (
        "import json, os, sys; params = json.loads(sys.argv[2]);"
        f"open({str(record)!r}, 'a').write(os.environ['JOB_COMPLETION_INDEX'] + ' ' + params['rdzv_endpoint']"
        " + ' ' + os.environ['MLTRAIN_POD_IP'] + '\\n')"
    )
    template = PodTemplate(image="img", namespace="ml", field_env={"MLTRAIN_POD_IP": "status.podIP"})
    objects = render_indexed_job(
        template,
        name="job",
        nodes=3,
        command=["python", "-c", code, "--params", '{"rdzv_endpoint": "job-0.job:29400"}'],
        env={},
        port=29400,
    )
    result = KubernetesHere(port=4242).launch(
        Launch(workload="probe", command=[], timeout_s=60, objects=tuple(objects))
    )
    assert result.returncodes == [0, 0, 0]
    assert sorted(record.read_text().splitlines()) == [f"{i} 127.0.0.1:4242 127.0.0.1" for i in range(3)]
    assert [env["JOB_COMPLETION_INDEX"] for _, env in local_pods(objects, port=1)] == ["0", "1", "2"]


@pytest.mark.parametrize(("request_cpu", "pods"), [("8", 2), ("500m", 1), ("1", 1), ("3", 1)])
def test_each_replayed_pod_is_told_its_share_of_this_machine_never_more_than_it_requested(request_cpu, pods):
    template = PodTemplate(
        image="img", namespace="ml", requests={"cpu": request_cpu}, resource_env={"MLTRAIN_NODE_CPUS": "requests.cpu"}
    )
    objects = render_indexed_job(
        template, name="job", nodes=pods, command=["python", "--params", "{}"], env={}, port=29400
    )
    share = max(1, len(os.sched_getaffinity(0)) // pods)
    asked = math.ceil(float(request_cpu[:-1]) / 1000 if request_cpu.endswith("m") else float(request_cpu))
    told = [env["MLTRAIN_NODE_CPUS"] for _, env in local_pods(objects, port=1)]
    assert told == [str(min(share, asked))] * pods


def test_procfs_reads_this_process():
    me = procfs.stat(os.getpid())
    assert me is not None and me.pid == os.getpid() and me.ppid == os.getppid() and me.running
    assert me.session == os.getsid(0) and me.cpu_s > 0 and me.rss_kb > 0
    # The kernel's RSS counters are per-CPU approximations: VmHWM can read a few pages under an earlier rss.
    assert procfs.peak_rss_kb(os.getpid()) >= 0.9 * me.rss_kb
    assert procfs.stat(2**22 + 12345) is None
    assert procfs.started_at(me.start_ticks) is not None and sys.platform.startswith("linux")
