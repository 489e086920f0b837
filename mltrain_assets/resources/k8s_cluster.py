"""The launchers' ``Cluster`` over dagster-k8s's ``DagsterKubernetesClient`` (its API calls, retries and deletes).

It reads each pod's status (and, while it is not scheduled, its events) into a ``PodState``, and
says when the cluster will not run a pod: unschedulable for longer than
``MLTRAIN_K8S_UNSCHEDULABLE_TIMEOUT_S``, an image that cannot be pulled, a container that cannot be
created (a missing Secret or key), a container killed out of memory. dagster-k8s's own
``wait_for_pod`` is not used for waiting: it retries ``CreateContainerConfigError`` until its
timeout, waits for an unschedulable pod for a day, and raises on every nonzero exit (a data
rejection's exit code is the workload's report, not a crash).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from mltrain_assets.launch.kubernetes import COMPLETION_INDEX, JobState, PodState, load_kube_config
from mltrain_assets.launch.protocol import PodCannotStart

DEFAULT_UNSCHEDULABLE_TIMEOUT_S = 300.0
# Waiting reasons of a container the kubelet will not start with this pod spec (image, Secret, command).
CANNOT_CREATE = (
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
)


class DagsterCluster:
    def __init__(
        self,
        client: Any = None,
        *,
        unschedulable_timeout_s: float = DEFAULT_UNSCHEDULABLE_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        if client is None:
            # dagster_k8s pulls in the Kubernetes client (~0.4 s): only a k8s launch pays for it.
            from dagster_k8s.client import DagsterKubernetesClient

            load_kube_config()
            client = DagsterKubernetesClient.production_client()
        self.client = client
        self.core_api = client.core_api
        self.batch_api = client.batch_api
        self.unschedulable_timeout_s = float(unschedulable_timeout_s)
        self.clock = clock
        self._unschedulable_since: dict[tuple[str, str], float] = {}

    # ------------------------------------------------------------------ the launchers' Cluster

    def pod_state(self, pod: str, namespace: str) -> PodState | None:
        import kubernetes

        try:
            body = self.client.get_pod_by_name(pod, namespace)
        except kubernetes.client.rest.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self.state_of(body)

    def job_pods(self, job: str, namespace: str) -> list[PodState]:
        return [self.state_of(pod) for pod in self.client.get_pods_in_job(job, namespace)]

    def job_state(self, job: str, namespace: str) -> JobState:
        status = self.client.get_job_status(job, namespace)
        if status is None:
            return JobState(failed=f"Job {namespace}/{job} was deleted")
        conditions = {c.type: c for c in status.conditions or [] if c.status == "True"}
        if "Complete" in conditions:
            return JobState(complete=True)
        if "Failed" in conditions:
            failed = conditions["Failed"]
            return JobState(failed=f"{failed.reason}: {failed.message}")
        return JobState()

    def delete_job(self, job: str, namespace: str) -> None:
        self.client.delete_job(job, namespace)

    # ------------------------------------------------------------------ reading a pod

    def state_of(self, pod: Any) -> PodState:
        """A ``V1Pod`` as the launchers see it."""
        meta, status = pod.metadata, pod.status
        container = _workload_status(pod)
        state = container.state if container is not None else None
        terminated = state.terminated if state is not None else None
        disruption = _condition(pod, "DisruptionTarget")
        disrupted = f"{disruption.reason}: {disruption.message}" if disruption and disruption.status == "True" else ""
        index = (meta.annotations or {}).get(COMPLETION_INDEX, (meta.labels or {}).get(COMPLETION_INDEX))
        end = (terminated.finished_at if terminated else None) or (
            disruption.last_transition_time if disrupted else None
        )
        return PodState(
            name=meta.name,
            namespace=meta.namespace,
            phase=status.phase or "Pending",
            index=int(index) if index is not None else None,
            created=_epoch(meta.creation_timestamp) or 0.0,
            started=state is not None and (state.running is not None or terminated is not None),
            exit_code=terminated.exit_code if terminated is not None else None,
            reason=status.reason or "",
            message=status.message or "",
            disrupted=disrupted,
            seconds_run=_seconds(status.start_time, end),
            cannot_start=self.cannot_start(pod),
        )

    def cannot_start(self, pod: Any) -> PodCannotStart | None:
        """Why the cluster will not run ``pod`` (the scheduler's or kubelet's reason and message), or None."""
        name, namespace = pod.metadata.name, pod.metadata.namespace
        container = _workload_status(pod)
        if container is not None:
            waiting = container.state.waiting if container.state is not None else None
            if waiting is not None and waiting.reason in CANNOT_CREATE:
                image = f" (image {container.image})" if "Image" in waiting.reason and container.image else ""
                return PodCannotStart(name, waiting.reason, f"{waiting.message or ''}{image}", namespace=namespace)
            for state in (container.state, container.last_state):
                terminated = state.terminated if state is not None else None
                if terminated is not None and terminated.reason == "OOMKilled":
                    return PodCannotStart(name, "OOMKilled", _oom_message(pod, container.name), namespace=namespace)
        return self._unschedulable(pod)

    def _unschedulable(self, pod: Any) -> PodCannotStart | None:
        """Pending and refused by the scheduler for longer than the timeout (counted from when it was first seen so)."""
        key = (pod.metadata.namespace, pod.metadata.name)
        scheduled = _condition(pod, "PodScheduled")
        if pod.status.phase not in (None, "Pending") or (scheduled is not None and scheduled.status == "True"):
            self._unschedulable_since.pop(key, None)
            return None
        refusals = [e for e in self.client.retrieve_pod_events(key[1], key[0]) if e.reason == "FailedScheduling"]
        refused = scheduled is not None and scheduled.reason == "Unschedulable"
        if not refusals and not refused:
            return None
        waited = self.clock() - self._unschedulable_since.setdefault(key, self.clock())
        if waited < self.unschedulable_timeout_s:
            return None
        latest = max(refusals, key=_event_time, default=None)
        message = latest.message if latest is not None else scheduled.message
        limit = f"MLTRAIN_K8S_UNSCHEDULABLE_TIMEOUT_S={self.unschedulable_timeout_s:.0f}"
        return PodCannotStart(
            key[1], "Unschedulable", f"{message} (unschedulable for {waited:.0f}s; {limit})", namespace=key[0]
        )


def _workload_status(pod: Any) -> Any:
    """The status of the pod's first container (the workload's: pods here run one)."""
    statuses = pod.status.container_statuses or []
    first = pod.spec.containers[0].name if pod.spec and pod.spec.containers else None
    return next((s for s in statuses if s.name == first), statuses[0] if statuses else None)


def _condition(pod: Any, kind: str) -> Any:
    return next((c for c in pod.status.conditions or [] if c.type == kind), None)


def _oom_message(pod: Any, container: str) -> str:
    spec = next((c for c in pod.spec.containers or [] if c.name == container), None)
    limits = (spec.resources.limits or {}) if spec is not None and spec.resources is not None else {}
    if "memory" in limits:
        return f"container {container} was killed for exceeding its memory limit {limits['memory']}"
    return f"container {container} was killed out of memory (no memory limit: the node ran out)"


def _epoch(when: datetime | None) -> float | None:
    return when.timestamp() if when is not None else None


def _seconds(start: datetime | None, end: datetime | None) -> float:
    """How long a pod ran: from its start to ``end`` (or now, while it runs)."""
    if start is None:
        return 0.0
    return max(0.0, (_epoch(end) or time.time()) - start.timestamp())


def _event_time(event: Any) -> float:
    when = event.last_timestamp or event.event_time or event.first_timestamp or event.metadata.creation_timestamp
    return _epoch(when) or 0.0
