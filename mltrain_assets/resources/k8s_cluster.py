"""The launchers' ``Cluster`` over dagster-k8s's ``DagsterKubernetesClient`` (its waits, retries and error texts)."""

from __future__ import annotations

from typing import Any

from mltrain_assets.launch.kubernetes import load_kube_config


class DagsterCluster:
    def __init__(self, client: Any = None):
        if client is None:
            # dagster_k8s pulls in the Kubernetes client (~0.4 s): only a k8s launch pays for it.
            from dagster_k8s.client import DagsterKubernetesClient

            load_kube_config()
            client = DagsterKubernetesClient.production_client()
        self.client = client
        self.core_api = client.core_api
        self.batch_api = client.batch_api

    def wait_for_pod_ready(self, pod: str, namespace: str, timeout_s: float) -> None:
        from dagster_k8s.client import WaitForPodState

        self.client.wait_for_pod(pod, namespace, wait_for_state=WaitForPodState.Ready, wait_timeout=timeout_s)

    def wait_for_pod_terminated(self, pod: str, namespace: str, timeout_s: float, poll_s: float) -> None:
        from dagster_k8s.client import WaitForPodState

        self.client.wait_for_pod(
            pod,
            namespace,
            wait_for_state=WaitForPodState.Terminated,
            wait_time_between_attempts=poll_s,
            wait_timeout=timeout_s,
        )

    def wait_for_job_success(self, job: str, namespace: str, timeout_s: float, poll_s: float, pods: int) -> None:
        self.client.wait_for_job_success(
            job, namespace, wait_timeout=timeout_s, wait_time_between_attempts=poll_s, num_pods_to_wait_for=pods
        )

    def pods_of_job(self, job: str, namespace: str) -> list[Any]:
        return self.client.get_pods_in_job(job, namespace)

    def delete_job(self, job: str, namespace: str) -> None:
        self.client.delete_job(job, namespace)
