"""What a workload launch becomes for its step: a ``WorkloadResult``, or a ``Failure`` that says why.

Every deployment's launch path ends here (``Compute.launch``): the launcher's errors (a timeout, a
pod the cluster will not start, an API failure) and the workload's own reports (rejected data, an
unavailable service, a misconfiguration, a corrupt input) are turned into failures with or without
step retries, and the rest into the step's result with what running it cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from dagster import AssetExecutionContext, Failure, MetadataValue

from mltrain_assets.launch import Launch, Launcher, LaunchFailed, LaunchResult, LaunchTimeout, PodCannotStart
from mltrain_assets.workloads.common.runtime import EXIT_DATA_REJECTED, EXIT_SERVICE_UNAVAILABLE

# Exit codes after which the workload reported why (the summary says what the user sees).
REPORTED_EXITS = (EXIT_DATA_REJECTED, EXIT_SERVICE_UNAVAILABLE)
OK_EXITS = (0, *REPORTED_EXITS)

# What a workload reported before a reported exit, as one step failure:
# (summary key, description, metadata key, whether the step's retry policy may run it again).
_REPORTED_SUMMARIES = (
    # Its client retried for a bounded budget already; stacking step retries on it would multiply the wait.
    ("service_unavailable", "{workload}: {reason}", "service_unavailable", False),
    # A long-lived server (Spark Connect) was unreachable or restarted mid-query: a fresh session on a retry may pass.
    ("service_interrupted", "{workload}: {reason}", "service_interrupted", True),
    ("misconfigured", "{workload} is misconfigured: {reason}", "misconfigured", False),
    # A committed input failed verification and was quarantined: rebuilding it, not retrying, helps.
    ("input_corrupt", "{workload}: an input is corrupt: {reason}", "input_corrupt", False),
    # Bad input does not get better on retry: fail once, with the workload's own words.
    ("data_rejected", "{workload} rejected its input: {reason}", "rule_violation", False),
)
K8S_NOT_MEASURED = (
    "not measured: the pod runs on a cluster node; its CPU and memory are the cluster's metrics "
    "(metrics-server / cAdvisor: container_cpu_usage_seconds_total, container_memory_working_set_bytes)"
)


@dataclass
class WorkloadResult:
    """What a finished workload reported back through Pipes, and what running it cost.

    ``cpu_s`` is user + system CPU seconds of every process the launch started (the workload and
    everything below it; on k8s-local each pod's tree, summed); ``peak_rss_mb`` the largest resident
    memory of one launched tree (one pod). Both are ``None`` where the run worker cannot see the
    processes (``k8s``: see ``measured``).
    """

    summary: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_s: float | None = None
    peak_rss_mb: float | None = None
    measured: str = ""  # how cpu_s and peak_rss_mb were measured, or why they were not
    # Node index -> pods it took, where the cluster replaced one (evicted, preempted); the seconds they had run.
    attempts: dict[int, int] = field(default_factory=dict)
    seconds_lost: float = 0.0

    @property
    def elapsed_s(self) -> float:
        return self.wall_s


def launched(launcher: Launcher, launch: Launch) -> LaunchResult:
    """``launcher.launch(launch)``, its errors as step failures (retried where a retry may help)."""
    workload = launch.workload
    try:
        return launcher.launch(launch)
    except LaunchTimeout as timeout:
        raise Failure(
            description=f"{workload} timed out after {launch.timeout_s:.0f}s and was killed", allow_retries=True
        ) from timeout
    except PodCannotStart as refused:  # an unschedulable request or a missing Secret: not fixed by a retry
        raise Failure(
            description=f"{workload}: {refused}",
            metadata={"pod_cannot_start": MetadataValue.text(refused.reason), "pod": refused.pod},
            allow_retries=refused.retryable,
        ) from refused
    except LaunchFailed as failed:
        raise Failure(description=str(failed), allow_retries=True) from failed


def reported(
    context: AssetExecutionContext, workload: str, result: LaunchResult, messages: list[Any], started: float
) -> WorkloadResult:
    """The step's result from the launch and the workload's Pipes messages, or the failure they report."""
    summary: dict[str, Any] = {}
    for message in _checked(workload, result.returncodes, messages):
        if isinstance(message, dict):
            summary.update(message)
    for key, describe, metadata_key, retry in _REPORTED_SUMMARIES:
        if key in summary:
            raise Failure(
                description=describe.format(workload=workload, reason=summary[key]),
                metadata={metadata_key: MetadataValue.text(summary[key])},
                allow_retries=retry,
            )
    usage = result.usage
    if result.attempts:
        context.log.warning(
            f"{workload}: pods replaced by the cluster (attempts per node {result.attempts}, "
            f"{result.seconds_lost:.0f}s of work redone): {'; '.join(result.disruptions)}"
        )
    return WorkloadResult(
        summary=summary,
        wall_s=time.monotonic() - started,
        cpu_s=usage.cpu_s if usage else None,
        peak_rss_mb=usage.peak_rss_mb if usage else None,
        measured=usage.measured if usage else K8S_NOT_MEASURED,
        attempts=dict(result.attempts),
        seconds_lost=result.seconds_lost,
    )


def _checked(workload: str, returncodes: list[int], messages: list[Any]) -> list[Any]:
    if returncodes[0] in REPORTED_EXITS:
        return messages
    failed = {i: code for i, code in enumerate(returncodes) if code != 0}
    if failed:
        where = "" if len(returncodes) == 1 else f" (node exit codes {failed})"
        code = returncodes[0] if returncodes[0] != 0 else next(iter(failed.values()))
        raise Failure(description=f"{workload} failed with exit code {code}{where}", allow_retries=True)
    return messages
