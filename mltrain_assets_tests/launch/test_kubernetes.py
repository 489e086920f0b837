"""The cluster launchers over a fake ``Cluster``: what they submit, what they follow, and that they delete it.

The real adapter (dagster-k8s's client against a stand-in API server) is in
``mltrain_assets_tests/resources/test_k8s_cluster.py``.
"""

import pytest

from mltrain_assets.launch import IndexedJob, KubernetesPod, Launch, LaunchFailed, LaunchTimeout, RenderOnly
from mltrain_assets.launch.kubernetes import JobState, PodState
from mltrain_assets.launch.protocol import PodCannotStart
from mltrain_assets.resources.k8s import PodTemplate, render_indexed_job

TEMPLATE = PodTemplate(image="registry.example.com/mltrain:1", namespace="ml")
COMMAND = ["python", "-m", "mltrain_assets.pipelines.recsys.workloads.train.launcher", "--params", "{}"]
NAME = "mltrain-train-1a2b"


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


def _pod(name: str, phase: str = "Succeeded", index: int | None = 0, exit_code: int | None = 0, **kw) -> PodState:
    started = phase in ("Running", "Succeeded") or exit_code is not None
    return PodState(name=name, namespace="ml", phase=phase, index=index, started=started, exit_code=exit_code, **kw)


class _FakeCluster:
    """Answers each poll with the next of ``polls``: (job state, pods) for a Job, a pod state for a Pod."""

    def __init__(self, calls: list, polls: list, *, pods_fail: bool = False):
        self.core_api = self.batch_api = _FakeApi(calls)
        self.calls, self.polls, self.pods_fail = calls, list(polls), pods_fail

    def _next(self):
        return self.polls.pop(0) if len(self.polls) > 1 else self.polls[0]

    def job_state(self, job, namespace):
        return self.polls[0][0]

    def job_pods(self, job, namespace):
        if self.pods_fail:
            raise RuntimeError("the API server is unreachable")
        return self._next()[1]

    def pod_state(self, pod, namespace):
        return self._next()

    def delete_job(self, name, namespace):
        self.calls.append(("delete job", name))


def _job_launch(timeout_s: float = 60) -> Launch:
    objects = render_indexed_job(TEMPLATE, name=NAME, nodes=2, command=COMMAND, env={}, port=29400)
    return Launch(workload="train", command=COMMAND, timeout_s=timeout_s, objects=tuple(objects))


def test_the_indexed_job_follows_pod_0_and_waits_for_the_job():
    calls: list = []
    followed: list = []
    running = [_pod("j-0-a", "Running", exit_code=None), _pod("j-1-b", "Running", index=1, exit_code=None)]
    done = [_pod("j-0-a"), _pod("j-1-b", index=1)]
    cluster = _FakeCluster(calls, [(JobState(), running), (JobState(complete=True), done)])
    result = IndexedJob(cluster, follow_logs=lambda ns, pod: followed.append((ns, pod)), poll_s=0).launch(_job_launch())
    assert result.returncodes == [0, 0] and result.attempts == {}
    assert followed == [("ml", "j-0-a")]
    assert calls == [("create service", NAME), ("create job", NAME), ("delete job", NAME), ("delete service", NAME)]


def test_a_replaced_pod_is_a_further_attempt_of_its_index_and_pod_0_is_followed_again():
    followed: list = []
    first = [_pod("j-0-a", "Running", exit_code=None, created=1.0), _pod("j-1-b", "Running", index=1, exit_code=None)]
    evicted = _pod(
        "j-0-a", "Failed", exit_code=137, created=1.0, disrupted="TerminationByKubelet: node shutdown", seconds_run=90.0
    )
    second = [evicted, _pod("j-0-c", "Running", exit_code=None, created=2.0), first[1]]
    done = [evicted, _pod("j-0-c", created=2.0), _pod("j-1-b", index=1)]
    polls = [(JobState(), first), (JobState(), second), (JobState(complete=True), done)]
    result = IndexedJob(_FakeCluster([], polls), follow_logs=lambda ns, pod: followed.append(pod), poll_s=0).launch(
        _job_launch()
    )
    assert followed == ["j-0-a", "j-0-c"]
    assert result.attempts == {0: 2} and result.seconds_lost == 90.0
    assert result.disruptions == ["pod ml/j-0-a was disrupted (TerminationByKubelet: node shutdown) after 90s"]


def test_a_failed_job_is_waited_for_until_its_pods_ended_so_node_0s_exit_code_is_read():
    rejected = _pod("j-0-a", "Failed", exit_code=3)
    stopping = [rejected, _pod("j-1-b", "Running", index=1, exit_code=None)]
    stopped = [rejected, _pod("j-1-b", "Failed", index=1, exit_code=143)]
    failed = JobState(failed="PodFailurePolicy: Container workload for pod ml/j-0-a failed with exit code 3")
    polls = [(failed, stopping), (failed, stopped)]
    assert IndexedJob(_FakeCluster([], polls), poll_s=0).launch(_job_launch()).returncodes == [3, 143]


def test_a_pod_that_cannot_start_fails_the_launch_and_everything_is_deleted():
    calls: list = []
    refused = PodCannotStart("j-1-b", "Unschedulable", "0/3 nodes are available", namespace="ml")
    pods = [
        _pod("j-0-a", "Running", exit_code=None),
        _pod("j-1-b", "Pending", index=1, exit_code=None, cannot_start=refused),
    ]
    with pytest.raises(PodCannotStart, match=r"^pod ml/j-1-b cannot start: Unschedulable: 0/3 nodes are available$"):
        IndexedJob(_FakeCluster(calls, [(JobState(), pods)]), poll_s=0).launch(_job_launch())
    assert calls[-2:] == [("delete job", NAME), ("delete service", NAME)]


def test_the_indexed_job_and_its_service_are_deleted_when_the_launch_fails():
    calls: list = []
    with pytest.raises(LaunchFailed, match=r"on 2 nodes .* failed: the API server is unreachable"):
        IndexedJob(_FakeCluster(calls, [(JobState(), [])], pods_fail=True), poll_s=0).launch(_job_launch())
    assert calls == [("create service", NAME), ("create job", NAME), ("delete job", NAME), ("delete service", NAME)]


def test_a_job_that_never_finishes_times_out_and_is_deleted():
    calls: list = []
    with pytest.raises(LaunchTimeout):
        IndexedJob(_FakeCluster(calls, [(JobState(), [])]), poll_s=0).launch(_job_launch(timeout_s=0))
    assert calls[-2:] == [("delete job", NAME), ("delete service", NAME)]


def test_a_pod_returns_its_exit_code_and_is_deleted():
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mltrain-x", "namespace": "ml"}, "spec": {}}
    calls: list = []
    polls = [
        _pod("mltrain-x", "Pending", index=None, exit_code=None),
        _pod("mltrain-x", "Failed", index=None, exit_code=1),
    ]
    result = KubernetesPod(
        _FakeCluster(calls, polls), follow_logs=lambda ns, p: calls.append(("logs", p)), poll_s=0
    ).launch(Launch(workload="w", command=COMMAND, timeout_s=60, objects=(pod,)))
    assert result.returncodes == [1]
    assert calls == [("create pod", "mltrain-x"), ("logs", "mltrain-x"), ("delete pod", "mltrain-x")]


def test_an_evicted_pod_fails_the_launch_retryably_naming_the_disruption():
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mltrain-x", "namespace": "ml"}, "spec": {}}
    evicted = _pod(
        "mltrain-x", "Failed", index=None, exit_code=137, disrupted="EvictionByEvictionAPI: drain", seconds_run=60
    )
    with pytest.raises(
        LaunchFailed, match=r"pod ml/mltrain-x was disrupted \(EvictionByEvictionAPI: drain\) after 60s"
    ) as failed:
        KubernetesPod(_FakeCluster([], [evicted]), poll_s=0).launch(
            Launch(workload="w", command=COMMAND, timeout_s=60, objects=(pod,))
        )
    assert not isinstance(failed.value, PodCannotStart)


def test_render_only_launches_nothing_and_returns_the_objects():
    objects = _job_launch().objects
    result = RenderOnly().launch(Launch(workload="w", command=COMMAND, timeout_s=1, objects=objects))
    assert result.objects == list(objects) and result.returncodes == []
