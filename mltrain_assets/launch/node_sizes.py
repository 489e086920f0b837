"""Does a rendered pod fit a node? The node pools' sizes are a setting, ``MLTRAIN_K8S_NODE_SIZES``:

    MLTRAIN_K8S_NODE_SIZES='{"cpu": {"cpu": "16", "memory": "64Gi", "ephemeral-storage": "80Gi"},
                             "gpu-a100": {"cpu": "94", "memory": "1300Gi", "nvidia.com/gpu": "8",
                                          "ephemeral-storage": "80Gi"}}'

A pool -> what one node can give a pod (its allocatable, not its capacity: the kubelet keeps some).
A pod that fits no pool stays Pending ("Insufficient memory"); ``mltrain manifests`` warns before
anyone submits it. A resource a pool does not list is not checked for it, except GPUs: a pool that
lists none has none. Empty (the default): nothing is checked.
"""

from __future__ import annotations

import json
from typing import Any

NODE_SIZES_ENV = "MLTRAIN_K8S_NODE_SIZES"
RESOURCES = ("cpu", "memory", "nvidia.com/gpu", "ephemeral-storage")
GPU = "nvidia.com/gpu"


def parse_node_sizes(raw: str) -> dict[str, dict[str, str]]:
    """The setting, checked: pool -> {resource: quantity}; raises ValueError naming what is wrong."""
    from kubernetes.utils.quantity import parse_quantity

    try:
        sizes = json.loads(raw or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"{NODE_SIZES_ENV} is not JSON ({exc})") from None
    if not isinstance(sizes, dict) or not all(isinstance(v, dict) for v in sizes.values()):
        raise ValueError(f"{NODE_SIZES_ENV} must be a JSON object of pool -> {{resource: quantity}}")
    problems = []
    for pool, resources in sizes.items():
        for resource, quantity in resources.items():
            if resource not in RESOURCES:
                problems.append(f"{pool}.{resource}: unknown resource (resources: {', '.join(RESOURCES)})")
                continue
            try:
                parse_quantity(str(quantity))
            except ValueError:
                problems.append(f"{pool}.{resource}: {quantity!r} is not a Kubernetes quantity")
    if problems:
        raise ValueError(f"{NODE_SIZES_ENV}: " + "; ".join(problems))
    return {pool: {r: str(q) for r, q in resources.items()} for pool, resources in sizes.items()}


def pod_requests(spec: dict[str, Any]) -> dict[str, str]:
    """What the scheduler needs free on one node for this pod: its containers' requests summed (GPUs: limits)."""
    from kubernetes.utils.quantity import parse_quantity

    total: dict[str, Any] = {}
    for container in spec.get("containers") or []:
        resources = container.get("resources") or {}
        # An extended resource (GPUs) is requested by its limit alone.
        asked = {
            **{k: v for k, v in (resources.get("limits") or {}).items() if k == GPU},
            **(resources.get("requests") or {}),
        }
        for resource, quantity in asked.items():
            if resource in RESOURCES:
                total[resource] = total.get(resource, 0) + parse_quantity(str(quantity))
    return {resource: _quantity(total[resource]) for resource in RESOURCES if resource in total}


def oversized(objects: list[dict[str, Any]], sizes: dict[str, dict[str, str]]) -> list[str]:
    """One warning per pod-making object whose pod fits no pool of ``sizes`` (none when ``sizes`` is empty)."""
    from kubernetes.utils.quantity import parse_quantity

    if not sizes:
        return []
    warnings = []
    for obj in objects:
        spec = _pod_spec(obj)
        if spec is None:
            continue
        requests = pod_requests(spec)
        misses = {}
        for pool, offered in sizes.items():
            short = [
                f"{resource} {asked} > {offered.get(resource, '0')}"
                for resource, asked in requests.items()
                if (resource in offered or resource == GPU)
                and parse_quantity(asked) > parse_quantity(offered.get(resource, "0"))
            ]
            if not short:
                break
            misses[pool] = short
        else:
            asked_text = ", ".join(f"{r} {q}" for r, q in requests.items())
            why = "; ".join(f"{pool}: {', '.join(short)}" for pool, short in misses.items())
            warnings.append(
                f"warning: {obj['kind']}/{obj['metadata'].get('name', '')} requests {asked_text} per pod, more than "
                f"any node of {NODE_SIZES_ENV} offers ({why}): it would stay Pending. Lower the step's resources "
                "(MLTRAIN_WORKLOAD_RESOURCES) or add a larger node pool."
            )
    return warnings


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj.get("kind") == "Pod":
        return obj.get("spec")
    if obj.get("kind") in ("Job", "PodTemplate"):
        template = obj.get("spec", {}).get("template") if obj["kind"] == "Job" else obj.get("template")
        return (template or {}).get("spec")
    return None


def _quantity(value: Any) -> str:
    """A parsed quantity written back compactly: whole numbers as such, else in Mi (memory-like) or millicores."""
    from decimal import Decimal

    value = Decimal(value)
    if value == value.to_integral_value():
        number = int(value)
        for suffix, factor in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2)):
            if number >= factor and number % factor == 0:
                return f"{number // factor}{suffix}"
        return str(number)
    return f"{int(value * 1000)}m"
