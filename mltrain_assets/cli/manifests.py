"""``mltrain manifests``: the exact Kubernetes objects the ``k8s`` deployment would submit for one step.

Like ``helm template``: the asset's body runs for real in this process (its inputs' references
are read from storage, the version is computed, the params are built and bound to the
deployment's settings), with ``RenderOnlyCompute``: ``k8s``'s settings and rendering, launched
through the ``RenderOnly`` launcher, which records the objects; the step stops at its launch, so
nothing is committed. On an ephemeral instance: no run is recorded either. Every object
is checked with kubernetes-validate (Kubernetes 1.30, strict) and against Pod Security "restricted"
(``resources/pod_security.py``) before it is printed, after a header naming the step's resources.
"""

from __future__ import annotations

import json
import sys
from typing import Any, cast

from mltrain_assets.cli.errors import UsageError

K8S_VERSION = "1.30"


def render(asset: str, partition: str | None) -> list[dict[str, Any]]:
    """The objects for ``asset`` at ``partition``; raises with the step's own error if it cannot get that far."""
    return rendered_launch(asset, partition)["objects"]


def rendered_launch(asset: str, partition: str | None) -> dict[str, Any]:
    """What the step's launch rendered: ``{"profile", "resources", "objects"}`` (``RenderOnlyCompute``)."""
    import tempfile
    from pathlib import Path

    from dagster import AssetKey, AssetsDefinition, DagsterInstance, materialize

    from mltrain_assets.definitions import defs
    from mltrain_assets.resources.deployments import RenderOnlyCompute

    # Declared as any asset-like definition; this code location's are all AssetsDefinitions (@asset, multi_asset).
    assets = cast(list[AssetsDefinition], list(defs.assets or []))
    keys = {k.to_user_string() for a in assets for k in a.keys}
    if asset not in keys:
        raise UsageError(f"unknown asset {asset!r}: expected one of {sorted(keys)}")
    with tempfile.TemporaryDirectory(prefix="mltrain-manifests-") as scratch:
        record = Path(scratch) / "rendered.json"
        result = materialize(
            assets,
            selection=[AssetKey(asset)],
            partition_key=_partition_key(defs, asset, partition),
            resources={**(defs.resources or {}), "compute": RenderOnlyCompute.from_settings(render_to=str(record))},
            instance=DagsterInstance.ephemeral(),
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
            raise_on_error=False,
        )
        # The render-only launch records what it would submit, and the step stops there (nothing ran to commit).
        if record.exists():
            return json.loads(record.read_text())
    failures = [e.step_failure_data for e in result.all_events if e.is_step_failure]
    errors = [str(failure.error.message if failure.error else "").strip() for failure in failures]
    raise SystemExit(f"{asset} {partition}: no workload launch to render. " + " ".join(errors)[:3000])


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


def header(asset: str, launch: dict[str, Any]) -> str:
    """What the step gets: the profile and resources its launch resolved (settings over the workload's declaration)."""
    import dataclasses

    from mltrain_assets.launch.workload_resources import WorkloadResources

    objects = launch["objects"]
    resources = WorkloadResources(**launch["resources"])
    # GPUs of distributed training come from its topology (MLTRAIN_TRAIN_GPUS_PER_NODE): say what the pods request.
    pods = [o["spec"].get("template", {}).get("spec", o["spec"]) for o in objects if o["kind"] in ("Pod", "Job")]
    gpus = max(
        (int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) for p in pods for c in p["containers"]), default=0
    )
    resources = dataclasses.replace(resources, gpus=gpus)
    kinds = ", ".join(f"{o['kind']}/{o['metadata'].get('name', '')}" for o in objects)
    return (
        f"# {asset}: profile {launch['profile']}: {resources.describe()}\n"
        f"# objects: {kinds}; valid for Kubernetes {K8S_VERSION}, Pod Security restricted + read-only root\n"
    )


def main(asset: str, partition: str | None) -> int:
    from mltrain_assets.resources.k8s import to_yaml

    launch = rendered_launch(asset, partition)
    objects = launch["objects"]
    validate(objects)
    print(header(asset, launch) + to_yaml(objects), end="")
    for warning in fit_warnings(objects):
        print(warning, file=sys.stderr)
    return 0


def fit_warnings(objects: list[dict[str, Any]]) -> list[str]:
    """A warning per pod no node of ``MLTRAIN_K8S_NODE_SIZES`` can hold (it would stay Pending)."""
    import os

    from mltrain_assets.launch.node_sizes import NODE_SIZES_ENV, oversized, parse_node_sizes

    try:
        sizes = parse_node_sizes(os.environ.get(NODE_SIZES_ENV, ""))
    except ValueError as refused:
        return [f"warning: {refused}: node sizes not checked"]
    return oversized(objects, sizes)
