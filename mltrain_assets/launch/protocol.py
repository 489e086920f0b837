"""One way to launch a workload, whatever runs it: the ``Launcher`` protocol and what it takes and returns.

The control plane (``resources/compute.py``: one compute resource per deployment) renders the
Kubernetes objects, opens the Pipes session the deployment talks through and passes its bootstrap
environment; a launcher starts the workload (processes here,
objects on a cluster, or nothing: render-only) and waits. Dagster-free: ``mltrain reproduce`` and
tests use the launchers without a run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Protocol

from mltrain_assets.launch.metering import TreeUsage

PART_OF = {"app.kubernetes.io/part-of": "mltrain"}
# The label dagster-k8s puts on run pods (K8sRunLauncher) and step pods: our objects carry it too, so the reaper
# (instance/reap.py) finds the objects of a run that ended.
RUN_ID_LABEL = "dagster/run-id"


@dataclass(frozen=True)
class Launch:
    """What to launch: the workload command, the objects a cluster would get, and the extra environment."""

    workload: str  # the workload module, for messages
    command: list[str]  # `python -m <module> --params JSON`, as a pod runs it ("python" resolved where it runs)
    timeout_s: float
    objects: tuple[dict[str, Any], ...] = ()  # rendered Kubernetes objects (Pod | Service + Job, + PodTemplate)
    env: dict[str, str] = field(default_factory=dict)  # for the workload besides the objects' (Pipes bootstrap)


@dataclass
class LaunchResult:
    """Exit codes (one per process or pod; the first reports), what it cost where measurable, what was rendered."""

    returncodes: list[int] = field(default_factory=list)
    usage: TreeUsage | None = None
    objects: list[dict[str, Any]] = field(default_factory=list)
    # Pods started per node index (an evicted or preempted pod's replacement is a second attempt); {} where
    # nothing was replaced, and the seconds the replaced pods had run (work redone from the last checkpoint).
    attempts: dict[int, int] = field(default_factory=dict)
    seconds_lost: float = 0.0
    disruptions: list[str] = field(default_factory=list)  # each replaced pod, with the cluster's reason


class LaunchFailed(Exception):
    """The launch itself failed (an API error, no pod for an index): retrying the step may help."""


class PodCannotStart(LaunchFailed):
    """A pod the cluster will not start (or keeps killing), with the scheduler's or kubelet's own words.

    ``reason`` is Kubernetes' reason string: ``Unschedulable`` (Pending with ``FailedScheduling``
    past ``MLTRAIN_K8S_UNSCHEDULABLE_TIMEOUT_S``), ``ErrImagePull`` / ``ImagePullBackOff``,
    ``CreateContainerConfigError`` (a missing Secret or key), ``OOMKilled``. ``message`` is the
    cluster's message (an event's or the container state's). ``retryable``: whether a step retry
    soon may help; an unschedulable request, a missing image or Secret, and an out-of-memory kill
    do not fix themselves, so the control plane fails the step without retries for those.
    k8s-local raises the same class for what it emulates.
    """

    def __init__(self, pod: str, reason: str, message: str, *, namespace: str = "", retryable: bool = False):
        self.pod, self.reason, self.message, self.namespace, self.retryable = pod, reason, message, namespace, retryable
        where = f"{namespace}/{pod}" if namespace else pod
        super().__init__(f"pod {where} cannot start: {reason}: {message}")

    def __reduce__(self):
        return (_pod_cannot_start, (self.pod, self.reason, self.message, self.namespace, self.retryable))


def _pod_cannot_start(pod: str, reason: str, message: str, namespace: str, retryable: bool) -> PodCannotStart:
    return PodCannotStart(pod, reason, message, namespace=namespace, retryable=retryable)


class Launcher(Protocol):
    def launch(self, launch: Launch) -> LaunchResult: ...


def local_python(command: list[str], python: str | None = None) -> list[str]:
    """The command with a pod's ``python`` replaced by this machine's interpreter."""
    return [(python or sys.executable) if part == "python" else part for part in command]
