"""The cluster adapter and launchers through the real Kubernetes client, against a local stand-in API server.

``DagsterCluster`` wraps dagster-k8s's ``DagsterKubernetesClient`` built as ``production_client``
builds it (its ``PatchedApiClient``), configured for the stand-in's address; Pipes messages are
read from the pod logs by dagster-k8s's own ``PipesK8sPodLogsMessageReader``. The test plays the
scheduler, kubelet and Job controller through the stand-in, and asserts on what the client sent.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from dagster_k8s.client import DagsterKubernetesClient, PatchedApiClient
from dagster_k8s.pipes import PipesK8sPodLogsMessageReader

from mltrain_assets.launch import IndexedJob, KubernetesPod, Launch, LaunchFailed
from mltrain_assets.launch.protocol import PodCannotStart
from mltrain_assets.resources.k8s import PodTemplate, render_indexed_job, render_pod
from mltrain_assets.resources.k8s_cluster import DagsterCluster
from mltrain_assets.workloads.common.runtime import EXIT_DATA_REJECTED
from mltrain_assets_tests.resources.fake_apiserver import FakeApiServer
from mltrain_assets_tests.resources.sample_workload import SampleParams
from mltrain_assets_tests.resources.test_compute import _failure_text, _retries, _run

TEMPLATE = PodTemplate(image="registry.example.com/mltrain:1", namespace="ml", limits={"memory": "8Gi"})
COMMAND = ["python", "-m", "mltrain_assets.pipelines.recsys.workloads.train.launcher", "--params", "{}"]
JOB = "mltrain-train-1a2b"
POLL_S = 0.05
REPO = Path(__file__).resolve().parents[2]

SCHEDULED = [{"type": "PodScheduled", "status": "True"}]
RUNNING = [
    {
        "name": "workload",
        "image": TEMPLATE.image,
        "imageID": "",
        "restartCount": 0,
        "ready": True,
        "state": {"running": {"startedAt": "2026-12-06T10:00:00Z"}},
    }
]


def _terminated(
    exit_code: int, reason: str = "", started: str = "2026-12-06T10:00:00Z", finished: str = "2026-12-06T10:05:00Z"
):
    state = {"exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0 else "Error")}
    return [
        {
            "name": "workload",
            "image": TEMPLATE.image,
            "imageID": "",
            "restartCount": 0,
            "ready": False,
            "state": {"terminated": {**state, "startedAt": started, "finishedAt": finished}},
        }
    ]


def _waiting(reason: str, message: str):
    return [
        {
            "name": "workload",
            "image": TEMPLATE.image,
            "imageID": "",
            "restartCount": 0,
            "ready": False,
            "state": {"waiting": {"reason": reason, "message": message}},
        }
    ]


def _pipes(method: str, **params: Any) -> str:
    return json.dumps({"__dagster_pipes_version": "0.1", "method": method, "params": params})


@pytest.fixture
def server():
    with FakeApiServer() as api:
        yield api


def _cluster(server: FakeApiServer, **kwargs: Any) -> DagsterCluster:
    """The adapter over dagster-k8s's client, as ``production_client`` builds it, pointed at the stand-in."""
    configuration = kubernetes.client.Configuration()
    configuration.host = server.url
    api = PatchedApiClient(configuration)
    client = DagsterKubernetesClient.production_client(
        batch_api_override=kubernetes.client.BatchV1Api(api), core_api_override=kubernetes.client.CoreV1Api(api)
    )
    return DagsterCluster(client, **kwargs)


class _Received:
    """A Pipes message handler: what the reader extracted from the followed pods' logs, by pod."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []
        self.pod = ""

    def handle_message(self, message: dict[str, Any]) -> None:
        self.messages.append((self.pod, message["method"]))


def _follower(cluster: DagsterCluster, received: _Received):
    """``follow_logs`` as the control plane passes it: dagster-k8s's reader consuming the pod's log stream."""
    reader = PipesK8sPodLogsMessageReader()

    def follow(namespace: str, pod: str) -> None:
        received.pod = pod
        with reader.read_messages(received):
            reader.consume_pod_logs(context=None, core_api=cluster.core_api, pod_name=pod, namespace=namespace)

    return follow


def _until(condition, what: str, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


def _background(fn, *args) -> Future:
    pool = ThreadPoolExecutor(1)
    future = pool.submit(fn, *args)
    pool.shutdown(wait=False)
    return future


def _pod_launch(name: str = "mltrain-w-1") -> Launch:
    pod = render_pod(TEMPLATE, name=name, command=COMMAND, env={"DAGSTER_PIPES_CONTEXT": "e30="})
    return Launch(workload="train", command=COMMAND, timeout_s=120, objects=(pod,))


def _job_launch(nodes: int = 2) -> Launch:
    objects = render_indexed_job(TEMPLATE, name=JOB, nodes=nodes, command=COMMAND, env={}, port=29400)
    return Launch(workload="train", command=COMMAND, timeout_s=120, objects=tuple(objects))


def _run_to_success(server: FakeApiServer, pod: str, *lines: str) -> None:
    server.set_pod_status(pod, phase="Running", conditions=SCHEDULED, container_statuses=RUNNING)
    for line in lines:
        server.log(pod, line)
    server.set_pod_status(pod, phase="Succeeded", container_statuses=_terminated(0))


# ---------------------------------------------------------------------------------------------- a Pod


def test_a_pod_is_created_its_logs_carry_the_pipes_messages_and_it_is_deleted(server):
    cluster, received = _cluster(server), _Received()
    launch = _pod_launch()
    future = _background(KubernetesPod(cluster, follow_logs=_follower(cluster, received), poll_s=POLL_S).launch, launch)
    _until(lambda: ("pods", "ml", "mltrain-w-1") in server.objects, "the pod is created")
    _run_to_success(
        server,
        "mltrain-w-1",
        _pipes("opened"),
        "epoch 1 loss 0.5",
        _pipes("report_custom_message", payload={}),
        _pipes("closed"),
    )
    result = future.result(timeout=60)

    assert result.returncodes == [0]
    assert received.messages == [
        ("mltrain-w-1", "opened"),
        ("mltrain-w-1", "report_custom_message"),
        ("mltrain-w-1", "closed"),
    ]
    (create,) = server.received("POST", "/api/v1/namespaces/ml/pods")
    assert create.body["metadata"]["name"] == "mltrain-w-1" and create.body["spec"]["containers"][0]["args"] == COMMAND
    (log,) = server.received("GET", "/pods/mltrain-w-1/log")
    assert log.query["follow"] == "True" and log.query["timestamps"] == "True"  # the Python client's spelling
    assert [r.path for r in server.received("DELETE", "/pods/")] == ["/api/v1/namespaces/ml/pods/mltrain-w-1"]
    assert ("pods", "ml", "mltrain-w-1") not in server.objects


def test_a_data_rejection_returns_its_exit_code_for_the_control_plane_to_read(server):
    cluster = _cluster(server)
    future = _background(KubernetesPod(cluster, poll_s=POLL_S).launch, _pod_launch())
    _until(lambda: ("pods", "ml", "mltrain-w-1") in server.objects, "the pod is created")
    server.set_pod_status(
        "mltrain-w-1", phase="Failed", conditions=SCHEDULED, container_statuses=_terminated(EXIT_DATA_REJECTED)
    )
    assert future.result(timeout=60).returncodes == [EXIT_DATA_REJECTED]


CANNOT_START = [
    (
        _waiting("CreateContainerConfigError", 'secret "mltrain-aws" not found'),
        'pod ml/mltrain-w-1 cannot start: CreateContainerConfigError: secret "mltrain-aws" not found',
    ),
    (
        _waiting("CreateContainerConfigError", "couldn't find key AWS_SECRET_ACCESS_KEY in Secret ml/mltrain-aws"),
        "pod ml/mltrain-w-1 cannot start: CreateContainerConfigError: couldn't find key AWS_SECRET_ACCESS_KEY in Secret ml/mltrain-aws",
    ),
    (
        _waiting("ImagePullBackOff", 'Back-off pulling image "registry.example.com/mltrain:1"'),
        'pod ml/mltrain-w-1 cannot start: ImagePullBackOff: Back-off pulling image "registry.example.com/mltrain:1" (image registry.example.com/mltrain:1)',
    ),
    (
        _waiting("ErrImagePull", "rpc error: code = NotFound desc = manifest unknown"),
        "pod ml/mltrain-w-1 cannot start: ErrImagePull: rpc error: code = NotFound desc = manifest unknown (image registry.example.com/mltrain:1)",
    ),
    (
        _terminated(137, reason="OOMKilled"),
        "pod ml/mltrain-w-1 cannot start: OOMKilled: container workload was killed for exceeding its memory limit 8Gi",
    ),
]


@pytest.mark.parametrize(("statuses", "expected"), CANNOT_START, ids=["secret", "secret-key", "backoff", "pull", "oom"])
def test_a_pod_the_kubelet_will_not_run_fails_at_once_with_its_reason_and_is_deleted(server, statuses, expected):
    cluster = _cluster(server)
    future = _background(KubernetesPod(cluster, poll_s=POLL_S).launch, _pod_launch())
    _until(lambda: ("pods", "ml", "mltrain-w-1") in server.objects, "the pod is created")
    phase = "Failed" if "terminated" in statuses[0]["state"] else "Pending"
    server.set_pod_status("mltrain-w-1", phase=phase, conditions=SCHEDULED, container_statuses=statuses)
    with pytest.raises(PodCannotStart) as refused:
        future.result(timeout=60)
    assert str(refused.value) == expected
    assert refused.value.pod == "mltrain-w-1" and refused.value.retryable is False
    assert ("pods", "ml", "mltrain-w-1") not in server.objects


def test_an_unschedulable_pod_fails_once_pending_past_the_setting_with_the_schedulers_message(server):
    clock = [1000.0]
    cluster = _cluster(server, unschedulable_timeout_s=300, clock=lambda: clock[0])
    cluster.core_api.create_namespaced_pod("ml", _pod_launch().objects[0])
    refusal = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu. preemption: 0/4 nodes are available: 4 No preemption victims found for incoming pod."
    server.set_pod_status(
        "mltrain-w-1",
        conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": refusal}],
    )
    server.add_event("mltrain-w-1", "FailedScheduling", refusal)
    assert cluster.pod_state("mltrain-w-1", "ml").cannot_start is None  # first seen unschedulable now
    clock[0] += 299
    assert cluster.pod_state("mltrain-w-1", "ml").cannot_start is None
    clock[0] += 1
    refused = cluster.pod_state("mltrain-w-1", "ml").cannot_start
    assert str(refused) == (
        f"pod ml/mltrain-w-1 cannot start: Unschedulable: {refusal} (unschedulable for 300s; MLTRAIN_K8S_UNSCHEDULABLE_TIMEOUT_S=300)"
    )
    events = server.received("GET", "/api/v1/namespaces/ml/events")
    assert events and all(r.query == {"fieldSelector": "involvedObject.name=mltrain-w-1"} for r in events)


def test_a_pod_that_gets_scheduled_is_not_refused(server):
    cluster = _cluster(server, unschedulable_timeout_s=0)
    cluster.core_api.create_namespaced_pod("ml", _pod_launch().objects[0])
    server.add_event("mltrain-w-1", "FailedScheduling", "0/4 nodes are available: 4 Insufficient cpu.")
    server.set_pod_status("mltrain-w-1", conditions=SCHEDULED, container_statuses=_waiting("ContainerCreating", ""))
    assert cluster.pod_state("mltrain-w-1", "ml").cannot_start is None


# ---------------------------------------------------------------------------------------------- an Indexed Job


def test_an_indexed_job_follows_pod_0_and_deletes_the_job_its_pods_and_the_service(server):
    cluster, received = _cluster(server), _Received()
    future = _background(
        IndexedJob(cluster, follow_logs=_follower(cluster, received), poll_s=POLL_S).launch, _job_launch()
    )
    pods = _until(
        lambda: len(server.pods(**{"job-name": JOB})) == 2 and server.pods(**{"job-name": JOB}), "the Job's pods"
    )
    pod0, pod1 = server.pod_of_index(JOB, 0), server.pod_of_index(JOB, 1)
    _run_to_success(server, pod1)
    _run_to_success(server, pod0, _pipes("opened"), _pipes("closed"))
    server.set_job_condition(JOB, "Complete")
    result = future.result(timeout=60)

    assert result.returncodes == [0, 0] and result.attempts == {} and result.seconds_lost == 0
    assert received.messages == [(pod0, "opened"), (pod0, "closed")]
    (service,) = server.received("POST", "/api/v1/namespaces/ml/services")
    (job,) = server.received("POST", "/apis/batch/v1/namespaces/ml/jobs")
    assert service.body["spec"]["clusterIP"] == "None" and job.body["spec"]["completionMode"] == "Indexed"
    assert job.body["spec"]["podFailurePolicy"]["rules"][0]["action"] == "Ignore"
    assert {
        r.query.get("labelSelector")
        for r in server.received("GET", "/api/v1/namespaces/ml/pods")
        if not r.path.endswith("/log")
    } >= {f"job-name={JOB}"}
    # Deleting a Job through the API orphans its pods: dagster-k8s deletes each one after it.
    deleted = [r.path.rsplit("/", 2)[-2:] for r in server.received("DELETE", "/namespaces/ml/")]
    assert ["jobs", JOB] in deleted and ["services", JOB] in deleted
    assert sorted(name for kind, name in deleted if kind == "pods") == sorted(p["metadata"]["name"] for p in pods)
    assert not [key for key in server.objects if key[0] != "events"]


def test_an_evicted_pod_is_replaced_by_the_job_and_counted_not_failed(server):
    cluster, received = _cluster(server), _Received()
    future = _background(
        IndexedJob(cluster, follow_logs=_follower(cluster, received), poll_s=POLL_S).launch, _job_launch()
    )
    _until(lambda: len(server.pods(**{"job-name": JOB})) == 2, "the Job's pods")
    pod0, evicted = server.pod_of_index(JOB, 0), server.pod_of_index(JOB, 1)
    server.set_pod_status(pod0, phase="Running", conditions=SCHEDULED, container_statuses=RUNNING)
    server.log(pod0, _pipes("opened"))
    server.set_pod_status(
        evicted, phase="Running", conditions=SCHEDULED, container_statuses=RUNNING, startTime="2026-12-06T10:00:00Z"
    )
    _until(lambda: server.received("GET", f"/pods/{pod0}/log"), "pod 0's logs are followed")
    # Node 1 is drained: the kubelet marks the pod a disruption target and kills it; the Job starts another pod 1.
    disruption = {
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "EvictionByEvictionAPI",
        "message": "Eviction API: evicting",
        "lastTransitionTime": "2026-12-06T10:07:30Z",
    }
    server.set_pod_status(
        evicted,
        phase="Failed",
        conditions=[*SCHEDULED, disruption],
        container_statuses=_terminated(137, finished="2026-12-06T10:07:30Z"),
    )
    replacement = server.replace_pod(JOB, 1)
    _run_to_success(server, replacement)
    _run_to_success(server, pod0, _pipes("closed"))
    server.set_job_condition(JOB, "Complete")
    result = future.result(timeout=60)

    assert result.returncodes == [0, 0]
    assert result.attempts == {1: 2} and result.seconds_lost == 450.0
    assert result.disruptions == [
        f"pod ml/{evicted} was disrupted (EvictionByEvictionAPI: Eviction API: evicting) after 450s"
    ]
    assert received.messages == [(pod0, "opened"), (pod0, "closed")]
    assert replacement != evicted and ("pods", "ml", replacement) not in server.objects


def test_when_pod_0_is_preempted_its_replacement_is_followed(server):
    cluster, received = _cluster(server), _Received()
    future = _background(
        IndexedJob(cluster, follow_logs=_follower(cluster, received), poll_s=POLL_S).launch, _job_launch()
    )
    _until(lambda: len(server.pods(**{"job-name": JOB})) == 2, "the Job's pods")
    first, pod1 = server.pod_of_index(JOB, 0), server.pod_of_index(JOB, 1)
    server.set_pod_status(first, phase="Running", conditions=SCHEDULED, container_statuses=RUNNING)
    # dagster-k8s's reader hands a line on when the next one (a later timestamp) arrives, or the stream ends.
    server.log(first, _pipes("opened"))
    server.log(first, "epoch 1")
    _until(lambda: received.messages, "the first pod 0's opened message is read")
    preempted = {
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "PreemptionByScheduler",
        "message": "ml/big-job: preempting",
    }
    server.set_pod_status(
        first, phase="Failed", conditions=[*SCHEDULED, preempted], container_statuses=_terminated(143)
    )
    second = server.replace_pod(JOB, 0)
    # The replacement resumes from the checkpoint and opens Pipes again: the reader takes the second `opened` as is.
    _run_to_success(
        server, second, _pipes("opened"), _pipes("report_custom_message", payload={"resumed": True}), _pipes("closed")
    )
    _run_to_success(server, pod1)
    server.set_job_condition(JOB, "Complete")
    result = future.result(timeout=60)

    assert result.attempts == {0: 2} and result.returncodes == [0, 0]
    assert received.messages == [
        (first, "opened"),
        (second, "opened"),
        (second, "report_custom_message"),
        (second, "closed"),
    ]


def test_a_job_failed_by_its_pod_failure_policy_returns_the_exit_codes(server):
    cluster = _cluster(server)
    future = _background(IndexedJob(cluster, poll_s=POLL_S).launch, _job_launch())
    _until(lambda: len(server.pods(**{"job-name": JOB})) == 2, "the Job's pods")
    server.set_pod_status(
        server.pod_of_index(JOB, 0),
        phase="Failed",
        conditions=SCHEDULED,
        container_statuses=_terminated(EXIT_DATA_REJECTED),
    )
    server.set_pod_status(
        server.pod_of_index(JOB, 1), phase="Failed", conditions=SCHEDULED, container_statuses=_terminated(143)
    )
    server.set_job_condition(
        JOB,
        "Failed",
        "PodFailurePolicy",
        "Container workload for pod ml/x failed with exit code 3 matching FailJob rule at index 1",
    )
    assert future.result(timeout=60).returncodes == [EXIT_DATA_REJECTED, 143]


def test_a_job_that_fails_before_its_pods_ran_fails_the_launch_with_the_jobs_reason(server):
    cluster = _cluster(server)
    future = _background(IndexedJob(cluster, poll_s=POLL_S).launch, _job_launch())
    _until(lambda: len(server.pods(**{"job-name": JOB})) == 2, "the Job's pods")
    server.set_job_condition(JOB, "Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
    with pytest.raises(
        LaunchFailed, match=r"on 2 nodes \(Job ml/mltrain-train-1a2b\) failed: DeadlineExceeded: Job was active longer"
    ):
        future.result(timeout=60)


def test_an_unschedulable_node_of_the_job_fails_the_launch_naming_its_pod(server):
    cluster = _cluster(server, unschedulable_timeout_s=0)
    future = _background(IndexedJob(cluster, poll_s=POLL_S).launch, _job_launch())
    _until(lambda: len(server.pods(**{"job-name": JOB})) == 2, "the Job's pods")
    pod1 = server.pod_of_index(JOB, 1)
    server.add_event(pod1, "FailedScheduling", "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.")
    with pytest.raises(
        PodCannotStart,
        match=rf"^pod ml/{pod1} cannot start: Unschedulable: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu\.",
    ):
        future.result(timeout=60)
    assert not [key for key in server.objects if key[0] in ("jobs", "services", "pods")]


# ---------------------------------------------------------------------------------------------- the control plane


@pytest.fixture
def kubelet(server, tmp_path, monkeypatch):
    """The stand-in as the cluster of ``MLTRAIN_COMPUTE=k8s`` (a kubeconfig naming it), running pods here."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "stand-in", "cluster": {"server": server.url}}],
                "users": [{"name": "test", "user": {}}],
                "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "test"}}],
                "current-context": "stand-in",
            }
        )
    )
    # The client reads KUBECONFIG when it is imported: set where load_kube_config looks.
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod: the kubeconfig, not in-cluster
    # Poll the stand-in every 50 ms, not every 5 s (the launchers' default, bound when the class was made).
    monkeypatch.setattr(KubernetesPod.__init__, "__defaults__", (None, POLL_S))
    default = kubernetes.client.Configuration.get_default_copy()
    server.run_pods(cwd=str(REPO))
    yield server
    kubernetes.client.Configuration.set_default(default)  # load_kube_config set the process-wide default


def _k8s_backend(**settings: Any):
    from mltrain_assets.resources.deployments import KubernetesCompute

    return KubernetesCompute(image="registry.example.com/mltrain:1", namespace="ml", **settings)


def test_a_k8s_step_reads_the_workloads_report_from_its_pod_logs(kubelet):
    result, workload = _run(SampleParams(mode="ok"), backend=_k8s_backend(), retries=0)
    assert result.success, _failure_text(result)
    assert workload.summary == {"answer": 42, "mode": "ok"}
    (created,) = kubelet.received("POST", "/api/v1/namespaces/ml/pods")
    assert kubelet.received("DELETE", f"/pods/{created.body['metadata']['name']}")


def test_a_k8s_data_rejection_fails_the_step_once_with_the_workloads_words(kubelet):
    result, _ = _run(SampleParams(mode="reject"), backend=_k8s_backend())
    assert not result.success
    assert "rejected its input" in _failure_text(result) and "rule known_city" in _failure_text(result)
    assert _retries(result) == 0


def test_a_missing_secret_fails_the_k8s_step_without_retry_naming_the_pod_and_secret(kubelet):
    result, _ = _run(SampleParams(mode="ok"), backend=_k8s_backend(env_secret="mltrain-aws"))
    assert not result.success
    (created,) = kubelet.received("POST", "/api/v1/namespaces/ml/pods")
    pod = created.body["metadata"]["name"]
    assert f'pod ml/{pod} cannot start: CreateContainerConfigError: secret "mltrain-aws" not found' in _failure_text(
        result
    )
    assert _retries(result) == 0, "a missing Secret does not appear on retry"
