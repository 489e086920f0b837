"""Launchers that run the workload on this machine: as a subprocess, or as the pods Kubernetes would start."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mltrain_assets.launch.local_objects import recorded
from mltrain_assets.launch.protocol import Launch, LaunchResult, PodCannotStart, local_python
from mltrain_assets.launch.scheduling import PodOf, cluster_nodes, pods_of, quantity, schedule
from mltrain_assets.launch.supervisor import OOM_EXIT, run_processes, supervise
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
    its name, Secret references -> ``local_secret``); an Indexed Job runs as one process per
    completion index, the rendezvous host mapped to 127.0.0.1:``port``. Only pod 0 gets
    ``launch.env`` (it alone talks to Dagster, here through a temp file).

    Before anything starts, what the cluster would refuse is refused with its words
    (``PodCannotStart``): a pod no node fits (``schedule``) and an env var whose Secret or key
    is missing. While they run, a pod past its memory limit is killed (``OOMKilled``), and a pod
    named by a file in ``evict_dir`` is evicted: its processes killed, the pod recorded Failed with
    a ``DisruptionTarget`` condition, and its replacement started with the same index, command and env.
    """

    port: int
    python: str = ""
    ok_exits: tuple[int, ...] = (0,)
    evict_dir: str = ""  # default: $MLTRAIN_HOME/k8s-local/evict

    def launch(self, launch: Launch) -> LaunchResult:
        objects = list(launch.objects)
        nodes = cluster_nodes()
        for unscheduled in pods_of(objects):
            schedule(unscheduled, nodes)
        pods = replayed_pods(objects, python=self.python, port=self.port)
        processes = [
            (pod.command, {**os.environ, **pod.env, **(launch.env if slot == 0 else {})})
            for slot, pod in enumerate(pods)
        ]
        evictions = Evictions(Path(self.evict_dir) if self.evict_dir else evict_dir(), pods)
        # Recorded while it runs (launch/local_objects.py): what a killed run worker leaves, `mltrain heal` reaps.
        with recorded(objects, processes) as processes:
            supervised = supervise(
                processes,
                timeout_s=launch.timeout_s,
                ok_exits=self.ok_exits,
                memory_limits_kb=[pod.memory_limit_kb for pod in pods],
                evictions=evictions,
            )
        for slot in supervised.out_of_memory:
            killed = pods[slot]
            raise PodCannotStart(
                killed.pod.name,
                "OOMKilled",
                f"container {killed.container_name!r} was killed past its memory limit {killed.memory_limit} "
                f"(exit code {OOM_EXIT}; k8s-local: the resident memory of its processes)",
                namespace=killed.namespace,
            )
        return LaunchResult(
            returncodes=supervised.returncodes,
            usage=supervised.usage,
            attempts={slot: n for slot, n in enumerate(supervised.attempts) if n > 1},
            seconds_lost=supervised.seconds_lost,
            disruptions=evictions.disruptions,
        )


@dataclass(frozen=True)
class LocalPod:
    """A pod resolved for this machine: the process it runs, and what the supervisor enforces on it."""

    pod: PodOf
    command: list[str]
    env: dict[str, str]

    @property
    def namespace(self) -> str:
        return self.pod.namespace

    @property
    def container_name(self) -> str:
        return str(self.pod.container.get("name", ""))

    @property
    def memory_limit(self) -> str:
        return str((self.pod.container.get("resources") or {}).get("limits", {}).get("memory", ""))

    @property
    def memory_limit_kb(self) -> int | None:
        return int(quantity(self.memory_limit)) // 1024 if self.memory_limit else None


def local_pods(objects: list[dict[str, Any]], *, python: str = "", port: int) -> list[tuple[list[str], dict[str, str]]]:
    """``(command, env)`` per pod the objects would start, resolved for this machine."""
    return [(pod.command, pod.env) for pod in replayed_pods(objects, python=python, port=port)]


def replayed_pods(objects: list[dict[str, Any]], *, python: str = "", port: int) -> list[LocalPod]:
    """Each pod the objects would start, its container's command and env resolved as the kubelet would here.

    Raises ``PodCannotStart`` (``CreateContainerConfigError``) for an env var whose Secret or key is missing.
    """
    pods = pods_of(objects)
    resolved = []
    # The replayed pods share this machine: each gets its share of its cores, never more than it requested.
    share = max(1, len(os.sched_getaffinity(0)) // max(1, len(pods)))
    for pod in pods:
        container = pod.container
        command = local_python(workload_command(container), python)
        params = command_params(command)
        if params.get("rdzv_endpoint"):
            params["rdzv_endpoint"] = f"127.0.0.1:{port}"  # pod 0's DNS name, on this machine
            command = with_params(command, params)
        env = dict(LOCAL_ENV)
        for source in container.get("envFrom") or []:
            env.update(_env_from(pod, source))
        for item in container.get("env") or []:
            if item["name"].startswith("DAGSTER_PIPES_"):
                continue
            value_from = item.get("valueFrom", {})
            field_path = value_from.get("fieldRef", {}).get("fieldPath")
            resource = value_from.get("resourceFieldRef", {}).get("resource")
            if "value" in item:
                env[item["name"]] = item["value"]
            elif field_path == "status.podIP":
                env[item["name"]] = "127.0.0.1"
            elif field_path == "metadata.name":
                env[item["name"]] = pod.name
            elif resource in ("requests.cpu", "limits.cpu"):
                kind, _ = resource.split(".")
                asked = container.get("resources", {}).get(kind, {}).get("cpu")
                env[item["name"]] = str(min(share, whole_cores(asked)) if asked else share)
            elif "secretKeyRef" in value_from:
                value = _secret_key(pod, value_from["secretKeyRef"])
                if value is not None:
                    env[item["name"]] = value
        if pod.index is not None:
            env[COMPLETION_INDEX_ENV] = str(pod.index)
        resolved.append(LocalPod(pod, command, env))
    return resolved


# ------------------------------------------------------------------ Secrets, as the kubelet resolves them


def secrets_dir() -> Path:
    """k8s-local's Secrets: ``<name>.env`` files (``KEY=VALUE`` lines, what ``kubectl create secret generic
    <name> --from-env-file`` takes), in ``$MLTRAIN_HOME/k8s-local/secrets``."""
    from mltrain_assets.settings import mltrain_home

    return mltrain_home() / "k8s-local" / "secrets"


def local_secret(name: str) -> dict[str, str] | None:
    """Secret ``name`` on this machine: its env file's keys, or ``None`` where there is no such file.

    Read as ``kubectl create secret generic --from-env-file`` reads it (kubectl's ``processEnvFileLine``):
    leading blanks dropped, blank and ``#`` lines skipped, ``KEY=value`` split at the first ``=`` with
    the value verbatim (no quotes removed), and a bare ``KEY`` taking this machine's value, if any.
    """
    path = secrets_dir() / f"{name}.env"
    if not path.is_file():
        return None
    secret = {}
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        key, has_value, value = line.partition("=")
        if has_value:
            secret[key] = value
        elif key in os.environ:
            secret[key] = os.environ[key]
    return secret


def _secret_key(pod: PodOf, ref: dict[str, Any]) -> str | None:
    """``valueFrom.secretKeyRef``: the key of the Secret's file; without a file, this machine's variable ``key``."""
    name, key, optional = ref.get("name", ""), ref["key"], bool(ref.get("optional"))
    secret = local_secret(name)
    value = os.environ.get(key) if secret is None else secret.get(key)
    if value is None and not optional:
        # The kubelet's words (kubelet_pods.go, makeEnvironmentVariables).
        raise _config_error(pod, f"couldn't find key {key} in Secret {pod.namespace}/{name}")
    return value


def _env_from(pod: PodOf, source: dict[str, Any]) -> dict[str, str]:
    """``envFrom.secretRef``: every key of the Secret's file; a Secret without one is not found."""
    ref = source.get("secretRef")
    if not ref:
        return {}
    secret = local_secret(ref["name"])
    if secret is None:
        if ref.get("optional"):
            return {}
        raise _config_error(
            pod, f'secret "{ref["name"]}" not found'
        )  # the API server's NotFound, as the kubelet shows it
    return {f"{source.get('prefix', '')}{key}": value for key, value in secret.items()}


def _config_error(pod: PodOf, message: str) -> PodCannotStart:
    return PodCannotStart(pod.name, "CreateContainerConfigError", message, namespace=pod.namespace)


# ------------------------------------------------------------------ eviction


# The condition the API server puts on a pod it evicts (the Job's podFailurePolicy matches its type).
DISRUPTION = {
    "type": "DisruptionTarget",
    "status": "True",
    "reason": "EvictionByEvictionAPI",
    "message": "Eviction API: evicting",
}


def evict_dir() -> Path:
    """Where a file named after a running pod evicts it: ``$MLTRAIN_HOME/k8s-local/evict``."""
    from mltrain_assets.settings import mltrain_home

    return mltrain_home() / "k8s-local" / "evict"


class Evictions:
    """The supervisor's ``evictions``: the slots whose pod a file in ``directory`` names (each file is consumed).

    An evicted pod is recorded (``disruptions``) as the Job controller sees it: phase Failed with a
    ``DisruptionTarget`` condition (``EvictionByEvictionAPI``), which the Job's podFailurePolicy ignores;
    its replacement keeps the completion index, command and env (and, here, the pod's name: a file by
    that name evicts it in turn).
    """

    def __init__(self, directory: Path, pods: list[LocalPod]):
        self.directory = directory
        self.pods = pods
        self.attempts = [1] * len(pods)
        self.disruptions: list[str] = []

    def __call__(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        slots = []
        for slot, pod in enumerate(self.pods):
            request = self.directory / pod.pod.name
            with contextlib.suppress(FileNotFoundError):
                request.unlink()
                slots.append(slot)
                self._record(slot)
        return slots

    def _record(self, slot: int) -> None:
        pod = self.pods[slot].pod
        self.attempts[slot] += 1
        self.disruptions.append(
            f"pod {pod.namespace}/{pod.name} (index {pod.index}) was disrupted: phase Failed, condition "
            f"DisruptionTarget ({DISRUPTION['reason']}: {DISRUPTION['message']}); replaced by a new pod for index "
            f"{pod.index} (attempt {self.attempts[slot]})"
        )
        print(f"k8s-local: {self.disruptions[-1]}", file=sys.stderr, flush=True)


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
