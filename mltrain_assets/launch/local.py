"""Launchers that run the workload on this machine: as a subprocess, or as the pods Kubernetes would start."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

from mltrain_assets.launch.protocol import Launch, LaunchResult, local_python
from mltrain_assets.launch.supervisor import run_processes
from mltrain_assets.workloads.common.params import COMPLETION_INDEX_ENV  # what a node reads its rank from

# Loopback for Spark: it otherwise binds the machine's external address.
LOCAL_ENV = {"SPARK_LOCAL_IP": "127.0.0.1"}


@dataclass(frozen=True)
class LocalProcess:
    """``python -m <module> --params JSON`` as a supervised subprocess (``launch/supervisor.py``)."""

    python: str = ""
    ok_exits: tuple[int, ...] = (0,)
    log: str | None = None  # a file for the workload's output (default: the caller's stdout and stderr)

    def launch(self, launch: Launch) -> LaunchResult:
        env = {**os.environ, **LOCAL_ENV, **launch.env}
        returncodes, usage = run_processes(
            [(local_python(launch.command, self.python), env)],
            timeout_s=launch.timeout_s,
            ok_exits=self.ok_exits,
            log=self.log,
        )
        return LaunchResult(returncodes=returncodes, usage=usage)


@dataclass(frozen=True)
class KubernetesHere:
    """Exactly the rendered objects, run here: each pod's container as a local process (``k8s-local``).

    Pod env is resolved the way the kubelet would (downward-API pod IP -> 127.0.0.1, pod name ->
    its name, Secret references -> this machine's values of the same variables); an Indexed Job
    runs as one process per completion index, the rendezvous host mapped to 127.0.0.1:``port``.
    Only pod 0 gets ``launch.env`` (it alone talks to Dagster, here through a temp file).
    """

    port: int
    python: str = ""
    ok_exits: tuple[int, ...] = (0,)

    def launch(self, launch: Launch) -> LaunchResult:
        pods = local_pods(list(launch.objects), python=self.python, port=self.port)
        processes = [
            (command, {**os.environ, **env, **(launch.env if index == 0 else {})})
            for index, (command, env) in enumerate(pods)
        ]
        returncodes, usage = run_processes(processes, timeout_s=launch.timeout_s, ok_exits=self.ok_exits)
        return LaunchResult(returncodes=returncodes, usage=usage)


def local_pods(objects: list[dict[str, Any]], *, python: str = "", port: int) -> list[tuple[list[str], dict[str, str]]]:
    """``(command, env)`` per pod the objects would start, resolved for this machine."""
    pods: list[tuple[dict[str, Any], str, int | None]] = []
    for obj in objects:
        if obj["kind"] == "Pod":
            pods.append((obj["spec"]["containers"][0], obj["metadata"]["name"], None))
        elif obj["kind"] == "Job":
            container = obj["spec"]["template"]["spec"]["containers"][0]
            name = obj["metadata"]["name"]
            pods += [(container, f"{name}-{index}", index) for index in range(int(obj["spec"]["completions"]))]
    resolved = []
    # The replayed pods share this machine: each gets its share of its cores, never more than it requested.
    share = max(1, len(os.sched_getaffinity(0)) // max(1, len(pods)))
    for container, pod_name, index in pods:
        command = local_python(workload_command(container), python)
        params = command_params(command)
        if params.get("rdzv_endpoint"):
            params["rdzv_endpoint"] = f"127.0.0.1:{port}"  # pod 0's DNS name, on this machine
            command = with_params(command, params)
        env = dict(LOCAL_ENV)
        for item in container.get("env") or []:
            if item["name"].startswith("DAGSTER_PIPES_"):
                continue
            field_path = item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            resource = item.get("valueFrom", {}).get("resourceFieldRef", {}).get("resource")
            if "value" in item:
                env[item["name"]] = item["value"]
            elif field_path == "status.podIP":
                env[item["name"]] = "127.0.0.1"
            elif field_path == "metadata.name":
                env[item["name"]] = pod_name
            elif resource in ("requests.cpu", "limits.cpu"):
                kind, _ = resource.split(".")
                asked = container.get("resources", {}).get(kind, {}).get("cpu")
                env[item["name"]] = str(min(share, whole_cores(asked)) if asked else share)
            elif "secretKeyRef" in item.get("valueFrom", {}) and item["name"] in os.environ:
                env[item["name"]] = os.environ[item["name"]]
        if index is not None:
            env[COMPLETION_INDEX_ENV] = str(index)
        resolved.append((command, env))
    return resolved


def whole_cores(quantity: str) -> int:
    """A Kubernetes CPU quantity ("2", "500m", "1.5") in whole cores, rounded up as the downward API does."""
    # Only objects rendered by a k8s backend carry one, and rendering has imported the client already.
    from kubernetes.utils.quantity import parse_quantity

    return max(1, math.ceil(parse_quantity(quantity)))


def workload_command(container: dict[str, Any]) -> list[str]:
    """What a workload container runs: its ``args`` under the image's entry point (or an explicit ``command``)."""
    return list(container.get("command") or []) + list(container.get("args") or [])


def command_params(command: list[str]) -> dict[str, Any]:
    """The ``--params`` JSON of a workload command line."""
    return json.loads(command[command.index("--params") + 1])


def with_params(command: list[str], params: dict[str, Any]) -> list[str]:
    index = command.index("--params") + 1
    return [*command[:index], json.dumps(params, sort_keys=True, separators=(",", ":")), *command[index + 1 :]]
