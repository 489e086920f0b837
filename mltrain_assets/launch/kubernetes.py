"""Launchers that submit the rendered objects to a cluster: one Pod, or a headless Service + Indexed Job.

They take the objects as rendered (the Pipes bootstrap environment already in them) and a
``Cluster`` (the control plane adapts dagster-k8s's ``DagsterKubernetesClient`` in
``resources/k8s_cluster.py``; tests run it against a local stand-in for the API server). They poll
the pods' state, so a pod the cluster will not start (unschedulable, image not pulled, a missing
Secret, killed out of memory) fails the launch with the cluster's reason (``PodCannotStart``)
rather than at the deadline. ``follow_logs(namespace, pod)`` is called once the reporting pod (node
0) has started, and again for each pod the Job started in its place: the control plane streams its
logs into its Pipes message reader there. Pods the cluster evicted or preempted (``DisruptionTarget``)
are replaced by the Job (its ``podFailurePolicy`` ignores them); the launcher counts the attempts
and the seconds the replaced pods had run. Whatever happens (success, failure, timeout, an
interrupted run) what was created is deleted.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from mltrain_assets.launch.protocol import Launch, LaunchFailed, LaunchResult, PodCannotStart
from mltrain_assets.launch.supervisor import LaunchTimeout

POLL_S = 5
FollowLogs = Callable[[str, str], None]
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


@dataclass(frozen=True)
class PodState:
    """What the launchers need to know of one pod, read from its status and events by the ``Cluster``."""

    name: str
    namespace: str
    phase: str  # Pending | Running | Succeeded | Failed | Unknown
    index: int | None = None  # the Indexed Job's completion index
    created: float = 0.0  # creation time (epoch seconds): the newest pod of an index is its current attempt
    started: bool = False  # a container runs or ran: its logs can be read
    exit_code: int | None = None  # the workload container's, once it terminated
    reason: str = ""  # the pod's status reason and message (e.g. DeadlineExceeded, Evicted)
    message: str = ""
    disrupted: str = ""  # the DisruptionTarget condition ("PreemptionByScheduler: ..."): not the work's failure
    seconds_run: float = 0.0  # from the pod's start to its termination (or now)
    cannot_start: PodCannotStart | None = None  # set when the cluster will not run it

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


@dataclass(frozen=True)
class JobState:
    complete: bool = False
    failed: str = ""  # the Failed condition's "reason: message"


class Cluster(Protocol):
    """What the launchers need of a Kubernetes API client."""

    core_api: Any  # kubernetes.client.CoreV1Api: create/delete pods and services
    batch_api: Any  # kubernetes.client.BatchV1Api: create jobs

    def pod_state(self, pod: str, namespace: str) -> PodState | None:
        """The pod's state, ``cannot_start`` set where the cluster will not run it; None once it is gone."""

    def job_pods(self, job: str, namespace: str) -> list[PodState]: ...

    def job_state(self, job: str, namespace: str) -> JobState: ...

    def delete_job(self, job: str, namespace: str) -> None: ...


@dataclass
class _OnCluster:
    """A launcher that submits to ``client``, follows the reporting pod's logs, and polls every ``poll_s``."""

    client: Cluster
    follow_logs: FollowLogs | None = None
    poll_s: float = POLL_S


def _only(launch: Launch, kind: str) -> dict[str, Any]:
    """The launch's one object of ``kind`` (a launch renders exactly one Pod, or one Service and one Job)."""
    (obj,) = [obj for obj in launch.objects if obj["kind"] == kind]
    return obj


@contextlib.contextmanager
def _failing_as_launch(what: str, cleanup: Callable[[], None]) -> Iterator[None]:
    """Errors of the cluster's API become ``LaunchFailed`` naming ``what``; ``cleanup`` runs whatever happens."""
    try:
        yield
    except (LaunchFailed, LaunchTimeout):
        raise
    except Exception as exc:
        raise LaunchFailed(f"{what} failed: {exc}") from exc
    finally:
        with contextlib.suppress(Exception):
            cleanup()


def _disrupted(pod: PodState) -> str:
    return f"pod {pod.namespace}/{pod.name} was disrupted ({pod.disrupted}) after {pod.seconds_run:.0f}s"


@dataclass
class KubernetesPod(_OnCluster):
    """The one Pod of ``launch.objects``: created, its logs followed, waited for until it terminates, deleted.

    A bare pod that is evicted or preempted is not replaced: the launch fails (retryably), and the
    step's retry resumes from the last checkpoint.
    """

    def launch(self, launch: Launch) -> LaunchResult:
        pod = _only(launch, "Pod")
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        deadline = time.monotonic() + launch.timeout_s
        self.client.core_api.create_namespaced_pod(namespace, pod)
        with _failing_as_launch(
            f"{launch.workload} (Pod {namespace}/{name})",
            lambda: self.client.core_api.delete_namespaced_pod(name, namespace),
        ):
            state = self._wait(name, namespace, launch, deadline, lambda s: s.started or s.terminal)
            if self.follow_logs is not None and state.started:
                self.follow_logs(namespace, name)
            state = self._wait(name, namespace, launch, deadline, lambda s: s.terminal)
        if state.disrupted:
            raise LaunchFailed(f"{launch.workload}: {_disrupted(state)}; the step's retry resumes it")
        if state.exit_code is None:
            raise LaunchFailed(
                f"{launch.workload} (Pod {namespace}/{name}) ended {state.phase} without an exit code: "
                f"{state.reason}: {state.message}"
            )
        return LaunchResult(returncodes=[state.exit_code])

    def _wait(
        self, name: str, namespace: str, launch: Launch, deadline: float, done: Callable[[PodState], bool]
    ) -> PodState:
        while True:
            state = self.client.pod_state(name, namespace)
            if state is None:
                raise LaunchFailed(f"{launch.workload}: pod {namespace}/{name} was deleted")
            if state.cannot_start is not None:
                raise state.cannot_start
            if state.reason == "DeadlineExceeded":
                raise LaunchTimeout(launch.timeout_s)
            if done(state):
                return state
            if time.monotonic() > deadline:
                raise LaunchTimeout(launch.timeout_s)
            time.sleep(self.poll_s)


@dataclass
class _Follower:
    """Follows node 0's current pod's logs in a thread, so the launcher keeps watching every pod meanwhile."""

    follow_logs: FollowLogs | None
    followed: list[str] = field(default_factory=list)
    thread: threading.Thread | None = None
    error: BaseException | None = None

    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def follow(self, pod: PodState) -> None:
        if self.follow_logs is None or pod.name in self.followed or self.busy():
            return
        self.followed.append(pod.name)
        follow_logs = self.follow_logs

        def run() -> None:
            try:
                follow_logs(pod.namespace, pod.name)
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, name=f"logs-{pod.name}", daemon=True)
        self.thread.start()

    def join(self, timeout_s: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout_s)


@dataclass
class IndexedJob(_OnCluster):
    """A headless Service + an Indexed Job of N pods; pod 0 reports. Waits for the Job to complete.

    A pod the Job replaced (evicted or preempted, ignored by its ``podFailurePolicy``) is a further
    attempt of its index, not a failure: the new pod is followed (node 0's logs again, from the new
    pod), and ``LaunchResult.attempts`` / ``seconds_lost`` say what it cost.
    """

    def launch(self, launch: Launch) -> LaunchResult:
        service, job = _only(launch, "Service"), _only(launch, "Job")
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        nodes = int(job["spec"]["completions"])
        deadline = time.monotonic() + launch.timeout_s
        follower = _Follower(self.follow_logs)
        attempts: dict[int, dict[str, PodState]] = {}
        current: dict[int, PodState] = {}
        self.client.core_api.create_namespaced_service(namespace, service)

        def cleanup() -> None:
            with contextlib.suppress(Exception):
                self.client.delete_job(name, namespace)
            with contextlib.suppress(Exception):
                self.client.core_api.delete_namespaced_service(name, namespace)
            follower.join(self.poll_s)  # the log stream ends with its pod

        with _failing_as_launch(f"{launch.workload} on {nodes} nodes (Job {namespace}/{name})", cleanup):
            self.client.batch_api.create_namespaced_job(namespace, job)
            while True:
                state = self.client.job_state(name, namespace)
                listed = [pod for pod in self.client.job_pods(name, namespace) if pod.index is not None]
                for pod in listed:
                    attempts.setdefault(int(pod.index or 0), {})[pod.name] = pod
                    if pod.cannot_start is not None:
                        raise pod.cannot_start
                current = {i: max(pods.values(), key=_recency) for i, pods in attempts.items()}
                if 0 in current and current[0].started:
                    follower.follow(current[0])
                # A failed Job stops its other pods: their exit codes (and node 0's report) come once they ended.
                present = {pod.name for pod in listed}
                if state.complete or (
                    state.failed and all(p.terminal or p.name not in present for p in current.values())
                ):
                    break
                if time.monotonic() > deadline:
                    raise LaunchTimeout(launch.timeout_s)
                time.sleep(self.poll_s)
            if 0 in current and current[0].started and current[0].name not in follower.followed:
                follower.join()
                follower.follow(current[0])  # node 0 finished between two polls: its logs are still there
            follower.join(max(self.poll_s, deadline - time.monotonic()))
            if follower.error is not None:
                raise follower.error
            result = _result(attempts, current, nodes, complete=state.complete)
            if not result.returncodes:
                raise LaunchFailed(
                    f"{launch.workload} on {nodes} nodes (Job {namespace}/{name}) failed: {state.failed}"
                    + "".join(f"; {_disrupted(p)}" for p in current.values() if p.disrupted)
                )
            return result


def _recency(pod: PodState) -> tuple[float, bool]:
    """Newest first; of two created in the same second (timestamps are whole seconds), the one that did not fail."""
    return (pod.created, pod.phase != "Failed")


def _result(
    attempts: dict[int, dict[str, PodState]], current: dict[int, PodState], nodes: int, *, complete: bool
) -> LaunchResult:
    """Exit codes of each index's last pod (none where one never ran: the Job's reason says why), and what replacing cost.

    A failed Job whose pods all ran (a data rejection's exit code fails it at once) returns their exit
    codes: the control plane reads what the workload reported, as it does for a local process.
    """
    codes = [0] * nodes if complete else [current[i].exit_code if i in current else None for i in range(nodes)]
    replaced = [p for i, pods in attempts.items() for p in pods.values() if p is not current[i]]
    return LaunchResult(
        returncodes=[] if None in codes else [int(c or 0) for c in codes],
        attempts={i: len(pods) for i, pods in sorted(attempts.items()) if len(pods) > 1},
        seconds_lost=round(sum(p.seconds_run for p in replaced), 3),
        disruptions=[_disrupted(p) if p.disrupted else f"pod {p.namespace}/{p.name}: {p.phase}" for p in replaced],
    )


@dataclass(frozen=True)
class RenderOnly:
    """Launches nothing: the objects are the result (``mltrain manifests``)."""

    def launch(self, launch: Launch) -> LaunchResult:
        return LaunchResult(objects=list(launch.objects))


def load_kube_config() -> None:
    """In a pod: its service account; elsewhere: the kubeconfig."""
    import kubernetes

    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
