"""``mltrain lineage``: everything a registered version came from (``cli/reproduce.py`` rebuilds it).

A registered version's tags name its training run, Dagster run, code commit and data snapshot
(an artifact of the run holding the model's storage version). From there every committed
version records what built it (``_MANIFEST.json``: its workload module and params, code
version, inputs, summary, files with SHA-256), down to the landed days (their fingerprints). The
lineage is that graph, printed; the reproduction rebuilds each version of it in a scratch store,
leaves first, with the recorded workload and params (where and how to run come from today's
settings), and compares what comes out: every file's SHA-256 and the summary metrics.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from mltrain_assets.artifacts import read_manifest
from mltrain_assets.workloads.common.params import WorkloadParams


@dataclass
class Version:
    """One committed version in a lineage: where it is, what built it, and what it was built from."""

    asset: str
    partition: str
    version: str
    uri: str
    manifest: dict[str, Any]
    inputs: list[Version] = field(default_factory=list)
    external: dict[str, str] = field(default_factory=dict)  # inputs outside the store: landing, registry
    key: str | None = None  # its date in a workload that committed several (its entry of ``targets``)

    @property
    def workload(self) -> dict[str, Any] | None:
        return self.manifest.get("workload")


def params_class(module: str) -> type[WorkloadParams]:
    """The params class of a workload module, from the registered pipelines' params modules."""
    from mltrain_assets.registry import current_module, params_modules

    for name in params_modules():
        for value in vars(importlib.import_module(name)).values():
            if not (isinstance(value, type) and issubclass(value, WorkloadParams)):
                continue
            if current_module(module) == getattr(value, "module", ""):
                return value
    raise ValueError(f"no params class for workload {module}")


def field_roles(module: str) -> dict[str, str]:
    return {f.name: f.metadata.get("role", "parameter") for f in dataclasses.fields(params_class(module))}


class Store:
    """The storage root today, and how to read a URI recorded under the root the lineage was written with."""

    def __init__(self, root: str, recorded_root: str):
        self.root, self.recorded_root = root.rstrip("/"), recorded_root.rstrip("/")

    def here(self, uri: str) -> str:
        if uri.startswith(self.recorded_root + "/"):
            return self.root + uri[len(self.recorded_root) :]
        return uri

    def relative(self, uri: str) -> str:
        for root in (self.root, self.recorded_root):
            if uri.startswith(root + "/"):
                return uri[len(root) + 1 :]
        return uri

    def holds(self, uri: str) -> bool:
        return uri.startswith((self.root + "/", self.recorded_root + "/"))


def _uris(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str)]
    if isinstance(value, dict):
        return [v for v in value.values() if isinstance(v, str)]
    return []


def own_key(params: dict[str, Any], relative: str) -> str | None:
    """The key of this version in a workload that commits several (``targets``: one per date)."""
    for key, target in (params.get("targets") or {}).items():
        if str(target).rstrip("/").endswith(relative):
            return key
    return None


def input_uris(version_uri_relative: str, workload: dict[str, Any]) -> dict[str, list[str]]:
    """The recorded input URIs by field; a multi-date workload's inputs narrowed to this version's date."""
    roles = field_roles(workload["module"])
    params = workload["params"]
    key = own_key(params, version_uri_relative)
    found = {}
    for name, value in params.items():
        if roles.get(name) != "input":
            continue
        if isinstance(value, dict) and key is not None:
            value = {key: value[key]} if key in value else {}
        found[name] = _uris(value)
    return found


def walk(uri: str, store: Store, seen: dict[str, Version] | None = None) -> Version:
    """The version at ``uri`` (a URI as recorded) with everything it was built from."""
    seen = {} if seen is None else seen
    here = store.here(uri)
    if here in seen:
        return seen[here]
    manifest = read_manifest(here)
    if manifest is None:
        raise FileNotFoundError(f"{here}: the lineage names this version but it is not committed")
    relative = store.relative(here)
    parts = relative.split("/")
    node = Version(parts[0], "|".join(parts[1:-1]), parts[-1].removeprefix("v="), here, manifest)
    node.key = own_key(node.workload["params"], relative) if node.workload else None
    seen[here] = node
    if node.workload:
        for name, uris in input_uris(relative, node.workload).items():
            for child in uris:
                if store.holds(child):
                    node.inputs.append(walk(child, store, seen))
                else:
                    node.external[name] = child
    else:  # written before manifests recorded their workload: follow the inputs they list
        for child in (k for k in manifest.get("inputs", {}) if isinstance(k, str) and store.holds(k)):
            node.inputs.append(walk(child, store, seen))
    return node


# ------------------------------------------------------------------ the registered version


def registered_version(model: str, version: str) -> dict[str, Any]:
    """The registry's record of a version: tags, its training run, the data snapshot."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a one-file download needs no bar
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    record = client.get_model_version(model, str(version))
    tags = dict(record.tags)
    run = client.get_run(record.run_id) if record.run_id else None
    snapshot_uri = tags.get("mltrain.data_snapshot_uri", "")
    snapshot = json.loads(mlflow.artifacts.load_text(snapshot_uri)) if snapshot_uri else {}
    aliases = [a for a in ("staging",) if str(_alias_version(client, model, a)) == str(version)]
    return {"model": model, "version": str(version), "tags": tags, "run": run, "snapshot": snapshot, "aliases": aliases}


def _alias_version(client, model: str, alias: str) -> str | None:
    try:
        return client.get_model_version_by_alias(model, alias).version
    except Exception:  # no such alias: MLflow raises a plain MlflowException
        return None


def model_version_of(record: dict[str, Any]) -> tuple[str, str]:
    """(asset, recorded URI) of the storage version the registered model was trained into."""
    for asset, entry in record["snapshot"].items():
        if asset.endswith(("_model",)) and isinstance(entry, dict) and entry.get("uri"):
            return asset, entry["uri"]
    raise ValueError(f"{record['model']} v{record['version']}: its data snapshot names no model version")


def lineage(model: str, version: str, storage_root: str) -> tuple[dict[str, Any], Version]:
    record = registered_version(model, version)
    asset, recorded = model_version_of(record)
    recorded_root = recorded[: recorded.index(f"/{asset}/")]
    return record, walk(recorded, Store(storage_root, recorded_root))


def _params_line(node: Version) -> str:
    if not node.workload:
        return f"producer {node.manifest.get('producer')} (workload not recorded: built before lineage recording)"
    roles = field_roles(node.workload["module"])
    shown = {k: v for k, v in node.workload["params"].items() if roles.get(k) == "parameter"}
    return f"workload {node.workload['module']}  code {node.manifest.get('code_version')}  params {json.dumps(shown)}"


def describe(record: dict[str, Any], root: Version) -> str:
    """The lineage as a person reads it: the registered version, then every version it came from."""
    tags, run = record["tags"], record["run"]
    lines = [
        f"{record['model']} v{record['version']}" + (f"  (alias {', '.join(record['aliases'])})" if record["aliases"] else ""),
        f"  partition {tags.get('mltrain.partition', '?')}; code commit {tags.get('mltrain.code_commit', '?')}",
        f"  registered by Dagster run {tags.get('mltrain.dagster_run_id', '?')} {tags.get('mltrain.dagster_run_url', '')}".rstrip(),
        "  metrics " + ", ".join(f"{k.removeprefix('mltrain.metric.')} {v}" for k, v in sorted(tags.items()) if k.startswith("mltrain.metric.")),
        f"  promotion: {tags.get('mltrain.promotion', '?')}",
    ]  # fmt: skip
    if run is not None:
        lines.append(
            f"  MLflow run {run.info.run_id} (experiment {run.info.experiment_id}); params "
            + json.dumps(dict(sorted(run.data.params.items())))
        )
    lines.append(
        f"  data snapshot {tags.get('mltrain.data_snapshot_id', '?')} ({tags.get('mltrain.data_snapshot_uri', '')})"
    )
    printed: set[str] = set()

    def add(node: Version, depth: int) -> None:
        pad = "  " * depth
        head = f"{pad}{node.asset} {node.partition} v={node.version}"
        if node.uri in printed:
            lines.append(f"{head} (above)")
            return
        printed.add(node.uri)
        manifest = node.manifest
        files = ", ".join(
            f"{n} ({f.get('rows', '-')} rows, sha256 {f.get('sha256', '')[:12]})"
            for n, f in sorted(manifest.get("files", {}).items())
        )
        lines.extend([
            f"{head}  {node.uri}",
            f"{pad}  {_params_line(node)}",
            f"{pad}  committed {manifest.get('committed_at')}; files {files}",
        ])  # fmt: skip
        if "marker_sha256" in manifest.get("inputs", {}):
            landed = manifest["inputs"]
            fingerprints = (node.workload or {}).get("params", {}).get("fingerprints") or {}
            lines.append(
                f"{pad}  landed {landed.get('landing')}: _SUCCESS sha256 {landed.get('marker_sha256')}, "
                f"{len(landed.get('files', {}))} part files, content fingerprint {fingerprints.get(node.key, '-')}"
            )
        for name, uri in sorted(node.external.items()):
            lines.append(f"{pad}  {name}: {uri}")
        for child in node.inputs:
            add(child, depth + 1)

    lines.append("built from:")
    add(root, 1)
    return "\n".join(lines)


# ------------------------------------------------------------------ reproduction
