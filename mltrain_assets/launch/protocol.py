"""One way to launch a workload, whatever runs it: the ``Launcher`` protocol and what it takes and returns.

The control plane (``resources/compute.py``) renders the Kubernetes objects, opens the Pipes
session and passes its bootstrap environment; a launcher starts the workload (processes here,
objects on a cluster, or nothing: render-only) and waits. Dagster-free: ``mltrain reproduce`` and
tests use the launchers without a run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Protocol

from mltrain_assets.launch.metering import TreeUsage


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


class LaunchFailed(Exception):
    """The launch itself failed (an API error, no pod for an index): retrying the step may help."""


class Launcher(Protocol):
    def launch(self, launch: Launch) -> LaunchResult: ...


def local_python(command: list[str], python: str | None = None) -> list[str]:
    """The command with a pod's ``python`` replaced by this machine's interpreter."""
    return [(python or sys.executable) if part == "python" else part for part in command]
