"""``mltrain manifests``: the exact Kubernetes objects the k8s backend would submit for one step.

Like ``helm template``: the asset's body runs for real in this process (its inputs' references
are read from storage, the version is computed, the params are built and bound to the
deployment's settings), with a compute backend that renders instead of launching. Every object
is checked with kubernetes-validate before it is printed.
"""

from __future__ import annotations

from typing import Any

K8S_VERSION = "1.30"


def render(asset: str, partition: str | None, backend: str = "k8s") -> list[dict[str, Any]]:
    """The objects for ``asset`` at ``partition``; raises with the step's own error if it cannot get that far."""
    from dagster import AssetKey, DagsterInstance, materialize

    from mltrain_assets.definitions import defs
    from mltrain_assets.resources import compute as compute_module
    from mltrain_assets.resources.compute import ComputeBackend

    assets = list(defs.assets or [])
    keys = {k.to_user_string() for a in assets for k in a.keys}
    if asset not in keys:
        raise SystemExit(f"unknown asset {asset!r}; assets: {sorted(keys)}")
    compute_module.RENDERED.clear()
    result = materialize(
        assets,
        selection=[AssetKey(asset)],
        partition_key=_partition_key(defs, asset, partition),
        resources={**defs.resources, "compute": ComputeBackend.from_settings(backend=backend, dry_run=True)},
        instance=DagsterInstance.ephemeral(),
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        raise_on_error=False,
    )
    rendered = list(compute_module.RENDERED)
    if not rendered:
        errors = [str(e.step_failure_data.error.message).strip() for e in result.all_events if e.is_step_failure]
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
    raise SystemExit(f"{partition!r} is not a partition of {asset} (e.g. {partitions_def.get_last_partition_key()})")


def validate(objects: list[dict[str, Any]]) -> None:
    import kubernetes_validate

    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def main(asset: str, partition: str | None, backend: str = "k8s") -> int:
    from mltrain_assets.resources.k8s import to_yaml

    objects = render(asset, partition, backend)
    validate(objects)
    print(to_yaml(objects), end="")
    return 0
