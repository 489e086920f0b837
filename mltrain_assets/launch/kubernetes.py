"""Launchers that submit the rendered objects to a cluster: one Pod, or a headless Service + Indexed Job.

They take the objects as rendered (the Pipes bootstrap environment already in them) and a
``Cluster`` (the control plane adapts dagster-k8s's ``DagsterKubernetesClient``, with its waiting
and retry logic, in ``resources/k8s_cluster.py``; a test passes a fake). ``follow_logs(namespace, pod)`` is called once the reporting pod
exists: the control plane streams its logs into its Pipes message reader there. Whatever
happens (success, failure, timeout, an interrupted run) what was created is deleted.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mltrain_assets.launch.protocol import Launch, LaunchFailed, LaunchResult

POLL_S = 5
FollowLogs = Callable[[str, str], None]


class Cluster(Protocol):
    """What the launchers need of a Kubernetes API client."""

    core_api: Any  # kubernetes.client.CoreV1Api
    batch_api: Any  # kubernetes.client.BatchV1Api

    def wait_for_pod_ready(self, pod: str, namespace: str, timeout_s: float) -> None: ...

    def wait_for_pod_terminated(self, pod: str, namespace: str, timeout_s: float, poll_s: float) -> None:
        """Returns once every container terminated successfully; raises if one failed."""

    def wait_for_job_success(self, job: str, namespace: str, timeout_s: float, poll_s: float, pods: int) -> None: ...

    def pods_of_job(self, job: str, namespace: str) -> list[Any]: ...

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


@dataclass
class KubernetesPod(_OnCluster):
    """The one Pod of ``launch.objects``: created, its logs followed, waited for until it terminates, deleted."""

    def launch(self, launch: Launch) -> LaunchResult:
        pod = _only(launch, "Pod")
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        self.client.core_api.create_namespaced_pod(namespace, pod)
        try:
            if self.follow_logs is not None:
                self.follow_logs(namespace, name)
            self.client.wait_for_pod_terminated(name, namespace, launch.timeout_s, self.poll_s)
        except Exception as exc:
            raise LaunchFailed(f"{launch.workload} (Pod {namespace}/{name}) failed: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):
                self.client.core_api.delete_namespaced_pod(name, namespace)
        return LaunchResult(returncodes=[0])  # wait_for_pod raises on a failed container


@dataclass
class IndexedJob(_OnCluster):
    """A headless Service + an Indexed Job of N pods; pod 0 reports. Waits for all N completions."""

    def launch(self, launch: Launch) -> LaunchResult:
        service, job = _only(launch, "Service"), _only(launch, "Job")
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        nodes = int(job["spec"]["completions"])
        self.client.core_api.create_namespaced_service(namespace, service)
        try:
            self.client.batch_api.create_namespaced_job(namespace, job)
            pod0 = self._pod_of_index(name, namespace, 0, launch.timeout_s)
            if self.follow_logs is not None:
                self.follow_logs(namespace, pod0)
            self.client.wait_for_job_success(name, namespace, launch.timeout_s, self.poll_s, nodes)
        except LaunchFailed:
            raise
        except Exception as exc:
            raise LaunchFailed(f"{launch.workload} on {nodes} nodes (Job {namespace}/{name}) failed: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):
                self.client.delete_job(name, namespace)
            with contextlib.suppress(Exception):
                self.client.core_api.delete_namespaced_service(name, namespace)
        return LaunchResult(returncodes=[0] * nodes)

    def _pod_of_index(self, job: str, namespace: str, index: int, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for pod in self.client.pods_of_job(job, namespace):
                if (pod.metadata.annotations or {}).get("batch.kubernetes.io/job-completion-index") == str(index):
                    return pod.metadata.name
            time.sleep(self.poll_s)
        raise LaunchFailed(f"Job {namespace}/{job} has no pod with completion index {index}")


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
