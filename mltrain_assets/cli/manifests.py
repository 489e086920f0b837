"""``mltrain manifests``: the exact Kubernetes objects the k8s backend would submit for one step.

Like ``helm template``: the asset's body runs for real in this process (its inputs' references
are read from storage, the version is computed, the params are built and bound to the
deployment's settings), with a compute backend that renders instead of launching. Every object
is checked with kubernetes-validate (Kubernetes 1.30, strict) and against Pod Security "restricted"
(``resources/pod_security.py``) before it is printed, after a header naming the step's resources.
"""

from __future__ import annotations

import sys
from typing import Any, cast

from mltrain_assets.cli.errors import UsageError

K8S_VERSION = "1.30"


def render(asset: str, partition: str | None, backend: str = "k8s") -> list[dict[str, Any]]:
    """The objects for ``asset`` at ``partition``; raises with the step's own error if it cannot get that far."""
    from dagster import AssetKey, AssetsDefinition, DagsterInstance, materialize

    from mltrain_assets.definitions import defs
    from mltrain_assets.resources.compute import RENDERED_KEY, ComputeBackend

    # Declared as any asset-like definition; this code location's are all AssetsDefinitions (@asset, multi_asset).
    assets = cast(list[AssetsDefinition], list(defs.assets or []))
    keys = {k.to_user_string() for a in assets for k in a.keys}
    if asset not in keys:
        raise UsageError(f"unknown asset {asset!r}: expected one of {sorted(keys)}")
    result = materialize(
        assets,
        selection=[AssetKey(asset)],
        partition_key=_partition_key(defs, asset, partition),
        resources={**(defs.resources or {}), "compute": ComputeBackend.from_settings(backend=backend, dry_run=True)},
        instance=DagsterInstance.ephemeral(),
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        raise_on_error=False,
    )
    failures = [e.step_failure_data for e in result.all_events if e.is_step_failure]
    # The render-only launch stops the step where it would launch, with the objects in its failure's metadata.
    rendered = [
        obj
        for failure in failures
        if failure.user_failure_data is not None and RENDERED_KEY in failure.user_failure_data.metadata
        # DryRun records them as a JSON metadata value (declared as any metadata value): a list of objects.
        for obj in cast(list[dict[str, Any]], failure.user_failure_data.metadata[RENDERED_KEY].value)
    ]
    if not rendered:
        errors = [str(failure.error.message if failure.error else "").strip() for failure in failures]
        raise SystemExit(f"{asset} {partition}: no workload launch to render. " + " ".join(errors)[:3000])
    return rendered


def _partition_key(defs, asset: str, partition: str | None) -> str | None:
    """Accept ``nyc|2026-11-27`` or ``2026-11-27|nyc`` for date x city assets."""
    from dagster import AssetKey

    if partition is None:
        return None
    partitions_def = defs.resolve_assets_def(AssetKey(asset)).partitions_def
    candidates = [partition, "|".join(reversed(partition.split("|")))]
    for key in candidates:
        if partitions_def is None or partitions_def.has_partition_key(key):
            return key
    raise UsageError(
        f"{partition!r} is not a partition of {asset}: expected e.g. {partitions_def.get_last_partition_key()}"
    )


def validate(objects: list[dict[str, Any]]) -> None:
    """Kubernetes 1.30's schema (strict) and Pod Security "restricted" + read-only root; raises naming each problem."""
    import kubernetes_validate

    from mltrain_assets.resources.pod_security import violations

    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    problems = [problem for obj in objects for problem in violations(obj)]
    if problems:
        raise SystemExit("Pod Security 'restricted' refuses:\n  " + "\n  ".join(problems))


def header(asset: str, objects: list[dict[str, Any]]) -> str:
    """What the step gets, from the settings (MLTRAIN_WORKLOAD_RESOURCES over the embedded table)."""
    import dataclasses
    import os

    from mltrain_assets.resources.workload_resources import RESOURCES_ENV, parse_overrides, resolve

    profiles = [o["metadata"].get("labels", {}).get("mltrain/profile") for o in objects if o["kind"] in ("Pod", "Job")]
    profile = next((p for p in profiles if p), "default")
    resources = resolve(profile, asset, parse_overrides(os.environ.get(RESOURCES_ENV, "{}")))
    # GPUs of distributed training come from its topology (MLTRAIN_TRAIN_GPUS_PER_NODE): say what the pods request.
    pods = [o["spec"].get("template", {}).get("spec", o["spec"]) for o in objects if o["kind"] in ("Pod", "Job")]
    gpus = max(
        (int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) for p in pods for c in p["containers"]), default=0
    )
    resources = dataclasses.replace(resources, gpus=gpus)
    kinds = ", ".join(f"{o['kind']}/{o['metadata'].get('name', '')}" for o in objects)
    return (
        f"# {asset}: profile {profile}: {resources.describe()}\n"
        f"# objects: {kinds}; valid for Kubernetes {K8S_VERSION}, Pod Security restricted + read-only root\n"
    )


def main(asset: str, partition: str | None, backend: str = "k8s") -> int:
    from mltrain_assets.resources.k8s import to_yaml

    objects = render(asset, partition, backend)
    validate(objects)
    print(header(asset, objects) + to_yaml(objects), end="")
    for warning in fit_warnings(objects):
        print(warning, file=sys.stderr)
    return 0


def fit_warnings(objects: list[dict[str, Any]]) -> list[str]:
    """A warning per pod no node of ``MLTRAIN_K8S_NODE_SIZES`` can hold (it would stay Pending)."""
    import os

    from mltrain_assets.resources.node_sizes import NODE_SIZES_ENV, oversized, parse_node_sizes

    try:
        sizes = parse_node_sizes(os.environ.get(NODE_SIZES_ENV, ""))
    except ValueError as refused:
        return [f"warning: {refused}: node sizes not checked"]
    return oversized(objects, sizes)
