"""The cluster launchers, over a fake cluster: what they submit, and that they delete it whatever happens."""

import pytest

from mltrain_assets.launch import IndexedJob, KubernetesPod, Launch, LaunchFailed, RenderOnly
from mltrain_assets.resources.k8s import PodTemplate, render_indexed_job

TEMPLATE = PodTemplate(image="registry.example.com/mltrain:1", namespace="ml")
COMMAND = ["python", "-m", "mltrain_assets.workloads.recsys.train.launcher", "--params", "{}"]


class _FakeApi:
    def __init__(self, calls: list):
        self.calls = calls

    def create_namespaced_service(self, namespace, body):
        self.calls.append(("create service", body["metadata"]["name"]))

    def create_namespaced_job(self, namespace, body):
        self.calls.append(("create job", body["metadata"]["name"]))

    def create_namespaced_pod(self, namespace, body):
        self.calls.append(("create pod", body["metadata"]["name"]))

    def delete_namespaced_service(self, name, namespace):
        self.calls.append(("delete service", name))

    def delete_namespaced_pod(self, name, namespace):
        self.calls.append(("delete pod", name))


class _FakeCluster:
    def __init__(self, calls: list, *, pods_fail: bool = False, container_fails: bool = False):
        self.core_api = self.batch_api = _FakeApi(calls)
        self.calls, self.pods_fail, self.container_fails = calls, pods_fail, container_fails

    def pods_of_job(self, job, namespace):
        if self.pods_fail:
            raise RuntimeError("the API server is unreachable")
        pod = type("Pod", (), {})()
        pod.metadata = type(
            "Meta", (), {"name": f"{job}-0-abcde", "annotations": {"batch.kubernetes.io/job-completion-index": "0"}}
        )()
        return [pod]

    def wait_for_pod_ready(self, pod, namespace, timeout_s):
        self.calls.append(("ready", pod))

    def wait_for_pod_terminated(self, pod, namespace, timeout_s, poll_s):
        if self.container_fails:
            raise RuntimeError(f"pod {pod} container workload failed with exit code 1")
        self.calls.append(("terminated", pod))

    def wait_for_job_success(self, job, namespace, timeout_s, poll_s, pods):
        self.calls.append(("job succeeded", job, pods))

    def delete_job(self, name, namespace):
        self.calls.append(("delete job", name))


def _job_objects():
    return render_indexed_job(TEMPLATE, name="mltrain-train-1a2b", nodes=2, command=COMMAND, env={}, port=29400)


def test_the_indexed_job_follows_pod_0_and_waits_for_every_node():
    calls: list = []
    followed: list = []
    result = IndexedJob(_FakeCluster(calls), follow_logs=lambda ns, pod: followed.append((ns, pod)), poll_s=0).launch(
        Launch(workload="train", command=COMMAND, timeout_s=60, objects=tuple(_job_objects()))
    )
    name = "mltrain-train-1a2b"
    assert result.returncodes == [0, 0]
    assert followed == [("ml", f"{name}-0-abcde")]
    assert calls == [
        ("create service", name),
        ("create job", name),
        ("job succeeded", name, 2),
        ("delete job", name),
        ("delete service", name),
    ]


def test_the_indexed_job_and_its_service_are_deleted_when_the_launch_fails():
    calls: list = []
    with pytest.raises(LaunchFailed, match=r"on 2 nodes .* failed: the API server is unreachable"):
        IndexedJob(_FakeCluster(calls, pods_fail=True), poll_s=0).launch(
            Launch(workload="train", command=COMMAND, timeout_s=60, objects=tuple(_job_objects()))
        )
    name = calls[0][1]
    assert calls == [("create service", name), ("create job", name), ("delete job", name), ("delete service", name)]


def test_a_pod_is_deleted_when_its_container_fails():
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mltrain-x", "namespace": "ml"}, "spec": {}}
    calls: list = []
    with pytest.raises(LaunchFailed, match=r"w \(Pod ml/mltrain-x\) failed: .*exit code 1"):
        KubernetesPod(
            _FakeCluster(calls, container_fails=True), follow_logs=lambda ns, p: calls.append(("logs", p))
        ).launch(Launch(workload="w", command=COMMAND, timeout_s=60, objects=(pod,)))
    assert calls == [("create pod", "mltrain-x"), ("logs", "mltrain-x"), ("delete pod", "mltrain-x")]


def test_render_only_launches_nothing_and_returns_the_objects():
    objects = tuple(_job_objects())
    result = RenderOnly().launch(Launch(workload="w", command=COMMAND, timeout_s=1, objects=objects))
    assert result.objects == list(objects) and result.returncodes == []
