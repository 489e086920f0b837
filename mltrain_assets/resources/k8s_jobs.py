"""A Pipes client for what ``PipesK8sClient`` cannot do: a distributed workload as an Indexed Job.

It submits the headless Service and the Indexed Job that ``ComputeBackend.manifests`` renders
(with the Pipes session's bootstrap env), streams pod 0's logs into the Pipes message reader
(Dagster's own ``PipesK8sPodLogsMessageReader``), waits until every index has succeeded, and
deletes the Job, its pods and the Service whatever happens: success, failure, timeout or an
interrupted run.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from dagster import Failure, PipesEnvContextInjector, open_pipes_session

if TYPE_CHECKING:
    from dagster_k8s.client import DagsterKubernetesClient

    from mltrain_assets.resources.compute import ComputeBackend
    from mltrain_assets.workloads.common.params import DistributedParams

POLL_S = 5


def run_indexed_job(
    backend: ComputeBackend,
    context,
    params: DistributedParams,
    *,
    timeout_s: float,
    profile: str,
    client: DagsterKubernetesClient | None = None,
) -> list[Any]:
    # dagster_k8s pulls in the Kubernetes client (~0.4 s): imported when a Job is launched, not with the definitions.
    from dagster_k8s.client import DagsterKubernetesClient, WaitForPodState
    from dagster_k8s.pipes import PipesK8sPodLogsMessageReader

    if client is None:
        _load_kube_config()
        client = DagsterKubernetesClient.production_client()
    reader = PipesK8sPodLogsMessageReader()
    with open_pipes_session(
        context=context, context_injector=PipesEnvContextInjector(), message_reader=reader
    ) as session:
        service, job = backend.manifests(
            context, params, timeout_s=timeout_s, profile=profile, pipes_env=session.get_bootstrap_env_vars()
        )
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        nodes = int(job["spec"]["completions"])
        context.log.info(f"submitting Indexed Job {namespace}/{name}: {nodes} nodes, rendezvous at pod 0")
        client.core_api.create_namespaced_service(namespace, service)
        try:
            client.batch_api.create_namespaced_job(namespace, job)
            pod0 = _pod_of_index(client, name, namespace, 0, timeout_s)
            client.wait_for_pod(pod0, namespace, wait_for_state=WaitForPodState.Ready, wait_timeout=timeout_s)
            reader.consume_pod_logs(context=context, core_api=client.core_api, namespace=namespace, pod_name=pod0)
            client.wait_for_job_success(
                name, namespace, wait_timeout=timeout_s, wait_time_between_attempts=POLL_S, num_pods_to_wait_for=nodes
            )
        except Exception as exc:
            if isinstance(exc, Failure):
                raise
            raise Failure(
                description=f"{params.module} on {nodes} nodes (Job {namespace}/{name}) failed: {exc}",
                allow_retries=True,
            ) from exc
        finally:
            with contextlib.suppress(Exception):
                client.delete_job(name, namespace)
            with contextlib.suppress(Exception):
                client.core_api.delete_namespaced_service(name, namespace)
    return list(session.get_custom_messages())


def _pod_of_index(client: DagsterKubernetesClient, job: str, namespace: str, index: int, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pod in client.get_pods_in_job(job, namespace):
            if (pod.metadata.annotations or {}).get("batch.kubernetes.io/job-completion-index") == str(index):
                return pod.metadata.name
        time.sleep(POLL_S)
    raise Failure(description=f"Job {namespace}/{job} has no pod with completion index {index}", allow_retries=True)


def _load_kube_config() -> None:
    import kubernetes

    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
