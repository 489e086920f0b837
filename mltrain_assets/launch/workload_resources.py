"""What a workload gets: CPU, memory, GPUs, scratch, ``/dev/shm`` and its timeout, as settings.

Three profiles (``default``, ``spark``, ``training``) with embedded defaults; a workload that needs more
or less than its profile says so where it is declared (``@workload(..., resources={...})``);
``MLTRAIN_WORKLOAD_RESOURCES`` (a JSON object of profile or step (asset name) -> fields) overrides any field:

    MLTRAIN_WORKLOAD_RESOURCES='{"training": {"memory": "64Gi"}, "recommender_model": {"shm": "32Gi"}}'

Resolution for a launch: the profile's defaults, the profile's overrides, the workload's declared
resources, the step's overrides. Timeouts apply to every deployment (a local subprocess too); the rest
only to pods.
Dagster-free: ``mltrain manifests``, the settings check and the compute resource read it alike.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any, Literal

RESOURCES_ENV = "MLTRAIN_WORKLOAD_RESOURCES"
PROFILES = ("default", "spark", "training")
WorkloadProfile = Literal["default", "spark", "training"]
# Kubernetes resource quantities: 2, 500m, 8Gi, 1.5G ...
_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


@dataclasses.dataclass(frozen=True)
class WorkloadResources:
    cpu: str  # requested cores (no CPU limit: throttling a JVM or torchrun helps nobody)
    memory: str  # request = limit: the pod is never OOM-killed for what a neighbour used
    ephemeral_storage: str  # requested node-local disk: the scratch volume, logs and image layers written
    scratch: str  # sizeLimit of the /tmp emptyDir (Spark spills, checkpoints before upload, temp files)
    timeout_s: int  # the step is killed (and may be retried) after this long
    gpus: int = 0  # nvidia.com/gpu per pod (distributed training takes MLTRAIN_TRAIN_GPUS_PER_NODE instead)
    # Memory-backed /dev/shm (NCCL's and DataLoader workers' shared memory; the runtime gives 64 MiB).
    # It counts against the memory limit: keep memory >= what the process uses + shm.
    shm: str = ""

    def describe(self) -> str:
        gpus = f", {self.gpus} GPU" if self.gpus else ""
        shm = f", /dev/shm {self.shm}" if self.shm else ""
        return (
            f"cpu {self.cpu}, memory {self.memory}{gpus}, ephemeral-storage {self.ephemeral_storage} "
            f"(scratch {self.scratch}{shm}), timeout {self.timeout_s}s"
        )


FIELDS = {f.name for f in dataclasses.fields(WorkloadResources)}

# Sized for the seed-scale benchmarks (BENCHMARKS.md): a 50M-ride day, 1M users x 50k items.
# Node-local disk: what an ordinary node's 100 GB boot disk offers after the system's and images' share
# (GKE's and AKS's defaults; an EKS node group's 20 GiB default needs a larger disk) — ephemeral-storage is
# the boot disk unless the pool puts it elsewhere, so asking for more leaves the pod Pending on every node.
EMBEDDED: dict[str, dict[str, Any]] = {
    "default": {"cpu": "2", "memory": "8Gi", "ephemeral_storage": "10Gi", "scratch": "8Gi", "timeout_s": 1800},
    "spark": {"cpu": "4", "memory": "16Gi", "ephemeral_storage": "40Gi", "scratch": "32Gi", "timeout_s": 3600},
    "training": {
        "cpu": "8",
        "memory": "64Gi",
        "ephemeral_storage": "40Gi",
        "scratch": "32Gi",
        "timeout_s": 3600,
        "shm": "16Gi",
    },
}


def parse_overrides(raw: str, steps: set[str] | None = None) -> dict[str, dict[str, Any]]:
    """``MLTRAIN_WORKLOAD_RESOURCES`` checked: known keys, known fields, usable values; raises naming each problem."""
    try:
        overrides = json.loads(raw or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"{RESOURCES_ENV} is not JSON ({exc}): {raw!r}") from None
    if not isinstance(overrides, dict):
        raise ValueError(f"{RESOURCES_ENV} must be a JSON object of profile or step -> fields, got {raw!r}")
    problems = []
    for key, fields in overrides.items():
        if steps is not None and key not in PROFILES and key not in steps:
            problems.append(
                f"{key!r} is neither a profile ({', '.join(PROFILES)}) nor a step ({', '.join(sorted(steps))})"
            )
            continue
        if not isinstance(fields, dict):
            problems.append(f"{key}: expected an object of fields, got {fields!r}")
            continue
        problems += [
            f"{key}.{name}: {problem}" for name, value in fields.items() if (problem := _field_problem(name, value))
        ]
    if problems:
        raise ValueError(f"{RESOURCES_ENV}: " + "; ".join(problems))
    return overrides


def _field_problem(name: str, value: Any) -> str:
    if name not in FIELDS:
        return f"unknown field (fields: {', '.join(sorted(FIELDS))})"
    if name in ("timeout_s", "gpus"):
        minimum = 1 if name == "timeout_s" else 0
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        return "" if ok else f"{value!r} is not a whole number >= {minimum}"
    if name == "shm" and value == "":
        return ""
    ok = isinstance(value, str | int) and bool(_QUANTITY.match(str(value)))
    return "" if ok else f"{value!r} is not a Kubernetes quantity (e.g. 4, 500m, 16Gi)"


def resolve(
    profile: str,
    step: str = "",
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    declared: Mapping[str, Any] | None = None,
    declared_by: str = "the workload",
) -> WorkloadResources:
    """The resources of ``step`` (an asset name) launched with ``profile``, for a workload that declares ``declared``."""
    if profile not in PROFILES:
        raise ValueError(f"unknown workload profile {profile!r} (profiles: {', '.join(PROFILES)})")
    declared = declared or {}
    problems = [f"{name}: {problem}" for name, value in declared.items() if (problem := _field_problem(name, value))]
    if problems:
        raise ValueError(f"resources declared by {declared_by}: " + "; ".join(problems))
    overrides = overrides or {}
    fields: dict[str, Any] = {}
    for layer in (EMBEDDED[profile], overrides.get(profile, {}), declared, overrides.get(step, {})):
        fields.update(layer)
    fields = {k: (str(v) if k not in ("timeout_s", "gpus") else int(v)) for k, v in fields.items()}
    return WorkloadResources(**fields)


def check_step_names(steps: set[str], env: Mapping[str, str] | None = None) -> None:
    """Refuse ``MLTRAIN_WORKLOAD_RESOURCES`` keys that are neither a profile nor one of ``steps``."""
    import os

    from mltrain_assets.settings import SettingsError

    env = os.environ if env is None else env
    try:
        parse_overrides(env.get(RESOURCES_ENV, "{}"), steps)
    except ValueError as refused:
        raise SettingsError(f"mltrain settings are not usable: {refused}") from None
