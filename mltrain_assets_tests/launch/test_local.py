"""The local launchers and the one /proc reader, without Dagster."""

import json
import math
import os
import sys
import threading
import time

import pytest

from mltrain_assets.launch import KubernetesHere, Launch, LaunchTimeout, LocalProcess, procfs
from mltrain_assets.launch.local import local_pods
from mltrain_assets.launch.protocol import PodCannotStart
from mltrain_assets.launch.scheduling import host_allocatable
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


# --------------------------------------------------------------------------- what the cluster would refuse


def _pod(requests: dict[str, str], limits: dict[str, str] | None = None, **template) -> list[dict]:
    spec = PodTemplate(image="img", namespace="ml", requests=requests, limits=limits or {}, **template)
    return render_indexed_job(spec, name="job", nodes=1, command=["python", "--params", "{}"], env={}, port=1)


@pytest.mark.parametrize(
    ("requests", "limits", "insufficient"),
    [
        ({"cpu": "1"}, {"nvidia.com/gpu": "1"}, "1 Insufficient nvidia.com/gpu"),
        ({"cpu": "4096"}, {}, "1 Insufficient cpu"),
        ({"memory": "64Ti"}, {}, "1 Insufficient memory"),
        ({"cpu": "4096", "memory": "64Ti"}, {}, "1 Insufficient cpu, 1 Insufficient memory"),
    ],
    ids=["gpu", "cpu", "memory", "both"],
)
def test_a_pod_no_node_fits_is_unschedulable_in_the_schedulers_words(requests, limits, insufficient, monkeypatch):
    # CPU and memory count against the nodes MLTRAIN_K8S_NODE_SIZES names; here, this machine's size.
    machine = host_allocatable()
    if "nvidia.com/gpu" not in limits:
        monkeypatch.setenv("MLTRAIN_K8S_NODE_SIZES", json.dumps({"here": machine}))
    with pytest.raises(PodCannotStart) as refused:
        KubernetesHere(port=1).launch(
            Launch(workload="probe", command=[], timeout_s=60, objects=tuple(_pod(requests, limits)))
        )
    assert refused.value.reason == "Unschedulable" and not refused.value.retryable
    assert str(refused.value) == (
        f"pod ml/job-0 cannot start: Unschedulable: 0/1 nodes are available: {insufficient}. "
        "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.."
    )


def test_this_machine_as_a_node_is_its_cpus_memory_and_gpus():
    machine = host_allocatable()
    assert machine["cpu"] == str(len(os.sched_getaffinity(0)))
    assert int(machine["memory"].removesuffix("Ki")) * 1024 == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert machine["nvidia.com/gpu"] == "0"  # no GPU on the machines these tests run on


def test_production_sized_requests_run_here_unless_node_sizes_say_otherwise(tmp_path, monkeypatch):
    # The embedded training profile asks for 8 cores and 64 Gi; k8s-local runs it on its share of this machine.
    monkeypatch.delenv("MLTRAIN_K8S_NODE_SIZES", raising=False)
    objects = _pod({"cpu": "8", "memory": "64Gi"})
    objects[1]["spec"]["template"]["spec"]["containers"][0]["args"] = ["python", "-c", "pass", "--params", "{}"]
    launched = KubernetesHere(port=1).launch(Launch(workload="probe", command=[], timeout_s=60, objects=tuple(objects)))
    assert launched.returncodes == [0]
    # Two pools: the message counts both nodes, as the scheduler does.
    monkeypatch.setenv(
        "MLTRAIN_K8S_NODE_SIZES", '{"a": {"cpu": "4", "memory": "128Gi"}, "b": {"cpu": "16", "memory": "32Gi"}}'
    )
    with pytest.raises(PodCannotStart, match=r"0/2 nodes are available: 1 Insufficient cpu, 1 Insufficient memory\. "):
        KubernetesHere(port=1).launch(Launch(workload="probe", command=[], timeout_s=60, objects=tuple(objects)))


def _secret_pod(env: list[dict] | None = None, env_from: list[dict] | None = None) -> list[dict]:
    objects = _pod({"cpu": "1"})
    container = objects[1]["spec"]["template"]["spec"]["containers"][0]
    container["env"] += env or []
    if env_from:
        container["envFrom"] = env_from
    return objects


def test_a_secret_key_without_a_value_here_is_a_create_container_config_error(mltrain_home, monkeypatch):
    ref = {"name": "MLTRAIN_SAMPLE_KEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "MLTRAIN_SAMPLE_KEY"}}}
    monkeypatch.delenv("MLTRAIN_SAMPLE_KEY", raising=False)
    with pytest.raises(PodCannotStart) as refused:
        local_pods(_secret_pod([ref]), port=1)
    assert str(refused.value) == (
        "pod ml/job-0 cannot start: CreateContainerConfigError: couldn't find key MLTRAIN_SAMPLE_KEY in Secret ml/creds"
    )
    # This machine's variable of the key's name stands in for a Secret k8s-local has no file for ...
    monkeypatch.setenv("MLTRAIN_SAMPLE_KEY", "from-the-machine")
    assert local_pods(_secret_pod([ref]), port=1)[0][1]["MLTRAIN_SAMPLE_KEY"] == "from-the-machine"
    # ... and a Secret's file (kubectl create secret generic creds --from-env-file=creds.env) is the Secret.
    (mltrain_home / "k8s-local" / "secrets").mkdir(parents=True)
    (mltrain_home / "k8s-local" / "secrets" / "creds.env").write_text("MLTRAIN_SAMPLE_KEY=from-the-secret\n")
    assert local_pods(_secret_pod([ref]), port=1)[0][1]["MLTRAIN_SAMPLE_KEY"] == "from-the-secret"
    (mltrain_home / "k8s-local" / "secrets" / "creds.env").write_text("OTHER=x\n")
    with pytest.raises(PodCannotStart, match="couldn't find key MLTRAIN_SAMPLE_KEY in Secret ml/creds"):
        local_pods(_secret_pod([ref]), port=1)
    optional = {**ref, "valueFrom": {"secretKeyRef": {**ref["valueFrom"]["secretKeyRef"], "optional": True}}}
    assert "MLTRAIN_SAMPLE_KEY" not in local_pods(_secret_pod([optional]), port=1)[0][1]


def test_env_from_a_secret_that_does_not_exist_here_is_a_create_container_config_error(mltrain_home):
    objects = _secret_pod(env_from=[{"secretRef": {"name": "mltrain-env"}}])
    with pytest.raises(PodCannotStart) as refused:
        KubernetesHere(port=1).launch(Launch(workload="probe", command=[], timeout_s=60, objects=tuple(objects)))
    assert str(refused.value) == 'pod ml/job-0 cannot start: CreateContainerConfigError: secret "mltrain-env" not found'
    (mltrain_home / "k8s-local" / "secrets").mkdir(parents=True)
    # Read as kubectl reads --from-env-file: values verbatim (quotes kept), a bare key from this machine.
    (mltrain_home / "k8s-local" / "secrets" / "mltrain-env.env").write_text(
        '# credentials\n  AWS_REGION=eu-west-1\nPGPASSWORD="p=w"\n\nMLTRAIN_HOME\n'
    )
    env = local_pods(objects, port=1)[0][1]
    assert (env["AWS_REGION"], env["PGPASSWORD"], env["MLTRAIN_HOME"]) == ("eu-west-1", '"p=w"', str(mltrain_home))


def test_a_pod_past_its_memory_limit_is_oom_killed(mltrain_home):
    objects = _pod({"cpu": "1", "memory": "64Mi"}, {"memory": "64Mi"})
    code = "import time; x = bytearray(256 * 1024 * 1024); time.sleep(60)"
    objects[1]["spec"]["template"]["spec"]["containers"][0]["args"] = ["python", "-c", code, "--params", "{}"]
    with pytest.raises(PodCannotStart) as killed:
        KubernetesHere(port=1).launch(Launch(workload="probe", command=[], timeout_s=60, objects=tuple(objects)))
    assert killed.value.reason == "OOMKilled" and not killed.value.retryable
    assert str(killed.value).startswith(
        "pod ml/job-0 cannot start: OOMKilled: container 'workload' was killed past its memory limit 64Mi (exit code 137"
    )


# --------------------------------------------------------------------------- eviction


def test_an_evicted_pod_is_replaced_with_the_same_index_and_the_attempt_recorded(mltrain_home, tmp_path):
    # Each pod records its start; index 1 waits to be evicted on its first attempt and exits 0 on its second.
    record = tmp_path / "starts.txt"
    code = (
        "import os, time; index = os.environ['JOB_COMPLETION_INDEX']\n"
        f"log = open({str(record)!r}, 'a'); log.write(index + ' ' + os.environ['MLTRAIN_POD_NAME'] + '\\n'); log.close()\n"
        f"if index == '1' and open({str(record)!r}).read().count('1 ') == 1: time.sleep(60)"
    )
    template = PodTemplate(image="img", namespace="ml", field_env={"MLTRAIN_POD_NAME": "metadata.name"})
    objects = render_indexed_job(
        template, name="job", nodes=2, command=["python", "-c", code, "--params", "{}"], env={}, port=1
    )
    evict = mltrain_home / "k8s-local" / "evict"

    def evict_index_1_once_started() -> None:
        while "1 job-1" not in (record.read_text() if record.exists() else ""):
            time.sleep(0.05)
        evict.mkdir(parents=True, exist_ok=True)
        (evict / "job-1").touch()  # as a user would: touch $MLTRAIN_HOME/k8s-local/evict/<pod>

    trigger = threading.Thread(target=evict_index_1_once_started, daemon=True)
    trigger.start()
    launched = KubernetesHere(port=1).launch(Launch(workload="probe", command=[], timeout_s=60, objects=tuple(objects)))
    trigger.join()
    assert launched.returncodes == [0, 0]
    assert launched.attempts == {1: 2} and launched.seconds_lost >= 0
    assert launched.disruptions == [
        "pod ml/job-1 (index 1) was disrupted: phase Failed, condition DisruptionTarget (EvictionByEvictionAPI: "
        "Eviction API: evicting); replaced by a new pod for index 1 (attempt 2)"
    ]
    assert not (evict / "job-1").exists()  # consumed: the replacement is not evicted in turn
    # The replacement ran with the same index, command and env.
    assert sorted(record.read_text().splitlines()) == ["0 job-0", "1 job-1", "1 job-1"]
