"""k8s-local's scheduler: the node a rendered pod fits, or the scheduler's own refusal (``Unschedulable``)."""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from mltrain_assets.launch.protocol import PodCannotStart

GPU = "nvidia.com/gpu"


@dataclass(frozen=True)
class PodOf:
    """One pod the objects would make: its name, namespace, completion index (Indexed Job) and container."""

    name: str
    namespace: str
    index: int | None
    spec: dict[str, Any]

    @property
    def container(self) -> dict[str, Any]:
        return self.spec["containers"][0]


def pods_of(objects: list[dict[str, Any]]) -> list[PodOf]:
    """The pods the objects would make: a Pod itself, ``completions`` pods per Indexed Job (``{job}-{index}``)."""
    pods: list[PodOf] = []
    for obj in objects:
        namespace = obj["metadata"].get("namespace", "default")
        if obj["kind"] == "Pod":
            pods.append(PodOf(obj["metadata"]["name"], namespace, None, obj["spec"]))
        elif obj["kind"] == "Job":
            spec, name = obj["spec"]["template"]["spec"], obj["metadata"]["name"]
            pods += [
                PodOf(f"{name}-{index}", namespace, index, spec) for index in range(int(obj["spec"]["completions"]))
            ]
    return pods


@dataclass(frozen=True)
class Node:
    """What one emulated node can give a pod (allocatable): CPU and memory where they are checked, GPUs always."""

    name: str
    allocatable: dict[str, str]


def cluster_nodes() -> list[Node]:
    """The nodes k8s-local schedules onto.

    ``MLTRAIN_K8S_NODE_SIZES`` set: one node per pool, as the cluster it describes (the sizes ``mltrain
    manifests`` warns against), each with no more GPUs than this machine has. Unset: this machine, for
    GPUs only: k8s-local runs the production-sized requests scaled to its share of this machine's cores
    (``MLTRAIN_NODE_CPUS``), so only what no process here can have is unschedulable. ``MLTRAIN_K8S_NODE_SIZES``
    naming this machine's size (``host_allocatable``) makes CPU and memory requests count too.
    """
    from mltrain_assets.launch.node_sizes import NODE_SIZES_ENV, parse_node_sizes

    raw = os.environ.get(NODE_SIZES_ENV, "")
    gpus = str(host_gpus())
    if not raw.strip():
        return [Node("this-machine", {GPU: gpus})]
    sizes = parse_node_sizes(raw)
    return [
        Node(pool, {**size, GPU: str(min(int(quantity(size.get(GPU, "0"))), int(gpus)))})
        for pool, size in sizes.items()
    ]


def host_allocatable() -> dict[str, str]:
    """This machine as a node: the CPUs this process may use, ``MemTotal``, its NVIDIA GPUs."""
    return {"cpu": str(len(os.sched_getaffinity(0))), "memory": f"{_mem_total_kb()}Ki", GPU: str(host_gpus())}


def host_gpus() -> int:
    return len([d for d in glob.glob("/dev/nvidia*") if re.fullmatch(r"/dev/nvidia\d+", d)])


def _mem_total_kb() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    raise OSError("no MemTotal in /proc/meminfo")


def schedule(pod: PodOf, nodes: list[Node]) -> Node:
    """The node the pod fits, or ``PodCannotStart`` (``Unschedulable``) in the scheduler's own words.

    The NodeResourcesFit filter's reason per node and resource (``Insufficient <resource>``),
    counted over nodes, sorted and joined as ``FitError.Error()`` does, then the DefaultPreemption
    plugin's message (nothing runs here that a preemption could remove).
    """
    from mltrain_assets.launch.node_sizes import pod_requests

    requests = pod_requests(pod.spec)
    reasons: dict[str, int] = {}
    for node in nodes:
        short = [
            resource
            for resource, asked in requests.items()
            if resource in node.allocatable and quantity(asked) > quantity(node.allocatable[resource])
        ]
        if not short:
            return node
        for resource in short:
            reason = f"Insufficient {resource}"
            reasons[reason] = reasons.get(reason, 0) + 1
    histogram = ", ".join(sorted(f"{count} {reason}" for reason, count in reasons.items()))
    message = (
        f"0/{len(nodes)} nodes are available: {histogram}. "
        # DefaultPreemption's reason ends in a period, and its message appends one, hence "pod.." as clusters print it.
        f"preemption: 0/{len(nodes)} nodes are available: {len(nodes)} No preemption victims found for incoming pod.."
    )
    raise PodCannotStart(pod.name, "Unschedulable", message, namespace=pod.namespace)


def quantity(value: str) -> Decimal:
    """A Kubernetes quantity ("500m", "16Gi") as a number."""
    # Only objects rendered by a k8s deployment carry one, and rendering has imported the client already.
    from kubernetes.utils.quantity import parse_quantity

    return parse_quantity(str(value))
