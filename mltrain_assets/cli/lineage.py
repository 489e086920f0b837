"""``mltrain lineage`` and ``mltrain reproduce``: everything a registered version came from, and a rebuild of it.

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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mltrain_assets.artifacts import join_uri, read_json, read_manifest
from mltrain_assets.workloads.common.params import WorkloadParams

# Where each workload's params class lives (module -> class found by its ``module`` attribute).
PARAMS_MODULES = (
    "mltrain_assets.workloads.ingest.params",
    "mltrain_assets.workloads.demand.params",
    "mltrain_assets.workloads.recsys.params",
)
# Summary values that say how long or where something ran, not what it produced. A key is one when
# it ends in a duration unit (``elapsed_s``, ``timings_s``, ``compute_seconds``) or holds one of
# these as whole words, separated by ``_`` (``run_id``, ``mlflow_run_id``, ``model_uri``,
# ``mlflow_model_id``), never as a bit of a word: ``world_size``, ``no_skill_fallback``,
# ``user_stats``, ``batch_size``, ``scoring_rows`` and ``marker_sha256`` describe the output.
# ``engine``: the SQL engine today's settings chose (the output is the same on either);
# ``checkpointed``: whether ALS checkpointed, which depends on where Spark ran.
# Checks (engine parity) are records of how an output was verified, not part of it.
_DURATION_SUFFIXES = ("_s", "_seconds")
_RUN_FACTS = (
    "seconds",
    "timings",
    "elapsed",
    "mlflow",
    "run_id",
    "uri",
    "committed",
    "dagster",
    "checkpoint",
    "checkpointed",
    "engine",
    "engine_parity",
)


def is_run_fact(name: str) -> bool:
    """Whether a summary key says how long or where something ran (left out of the comparison)."""
    key = name.lower()
    if key.endswith(_DURATION_SUFFIXES):
        return True
    words = f"_{key}_"
    return any(f"_{fact}_" in words for fact in _RUN_FACTS)


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
    for name in PARAMS_MODULES:
        for value in vars(importlib.import_module(name)).values():
            if isinstance(value, type) and issubclass(value, WorkloadParams) and getattr(value, "module", "") == module:
                return value
    raise ValueError(f"no params class for workload {module}")


def _roles(module: str) -> dict[str, str]:
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
    roles = _roles(workload["module"])
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
    roles = _roles(node.workload["module"])
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


def _levels(root: Version) -> list[list[Version]]:
    """Every version of the lineage by level: a level's versions are built only from earlier levels'."""
    depth: dict[str, int] = {}
    nodes: dict[str, Version] = {}

    def visit(node: Version) -> int:
        if node.uri not in depth:
            depth[node.uri] = 1 + max((visit(child) for child in node.inputs), default=-1)
            nodes[node.uri] = node
        return depth[node.uri]

    visit(root)
    levels: list[list[Version]] = [[] for _ in range(max(depth.values()) + 1)]
    for uri, level in depth.items():
        levels[level].append(nodes[uri])
    return levels


def _batches(level: list[Version], store: Store) -> list[list[Version]]:
    """A level's versions grouped into launches: one launch builds every date of a multi-date workload."""
    batches: dict[str, list[Version]] = {}
    for node in level:
        params = node.workload["params"] if node.workload else {}
        key = own_key(params, store.relative(node.uri))
        shared = {k: v for k, v in params.items() if not isinstance(v, dict)} if key is not None else node.uri
        batches.setdefault(json.dumps([node.workload and node.workload["module"], shared], default=str), []).append(
            node
        )
    return list(batches.values())


def _rebuild_params(batch: list[Version], scratch_root: str, rebuilt: dict[str, str], store: Store) -> WorkloadParams:
    """The recorded params of a launch, its inputs the rebuilt versions and its outputs in the scratch store."""
    workload = batch[0].workload
    roles = _roles(workload["module"])
    keys = {own_key(node.workload["params"], store.relative(node.uri)): node for node in batch}
    values = {}
    for name, value in workload["params"].items():
        if isinstance(value, dict) and None not in keys:  # a multi-date field: every date of the batch
            value = {key: node.workload["params"][name][key] for key, node in keys.items()}
        if roles.get(name) == "input":
            if name == "landing_uri":
                value = os.environ["MLTRAIN_LANDING_URI"]  # the landing zone is today's, the days are the same
            else:
                value = _remap(value, lambda u: rebuilt.get(store.here(u), store.here(u)))
        elif roles.get(name) == "output":
            if name == "targets":
                value = {key: join_uri(scratch_root, store.relative(node.uri)) for key, node in keys.items()}
            elif value:
                value = join_uri(scratch_root, store.relative(batch[0].uri))
        values[name] = value
    return params_class(workload["module"]).from_dict(values)


def _remap(value: Any, mapping) -> Any:
    if isinstance(value, str):
        return mapping(value)
    if isinstance(value, (list, tuple)):
        return [mapping(v) if isinstance(v, str) else v for v in value]
    if isinstance(value, dict):
        return {k: mapping(v) if isinstance(v, str) else v for k, v in value.items()}
    return value


def _same_summary(original: dict[str, Any], again: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The summary values that differ, leaving out how long and where things ran."""
    differ = {}
    for name in sorted(set(original) & set(again)):
        if is_run_fact(name) or original[name] == again[name]:
            continue
        differ[name] = (original[name], again[name])
    return differ


def _same_file(original: str, again: str, name: str, entry: dict[str, Any], again_entry: dict[str, Any]) -> bool:
    """Byte-identical; or, for a JSON record, equal but for the run facts it names (an MLflow run id)."""
    if entry.get("sha256") == again_entry.get("sha256"):
        return True
    if not name.endswith(".json") or not again_entry:
        return False
    before, after = read_json(original, name), read_json(again, name)
    return (
        isinstance(before, dict)
        and isinstance(after, dict)
        and not _same_summary(before, after)
        and (set(before) == set(after))
    )


def reproduce(model: str, version: str, storage_root: str, scratch: Path, progress=print) -> dict[str, Any]:
    """Rebuild every version of a registered model's lineage in ``scratch``; what matched and what did not."""
    from mltrain_assets.launch import Launch, LocalProcess
    from mltrain_assets.resources.compute import ComputeBackend
    from mltrain_assets.resources.spark import SparkConfig
    from mltrain_assets.resources.workload_resources import PROFILES, resolve

    record, root = lineage(model, version, storage_root)
    asset, recorded = model_version_of(record)
    store = Store(storage_root, recorded[: recorded.index(f"/{asset}/")])
    scratch.mkdir(parents=True, exist_ok=True)
    scratch_root = f"file://{scratch.resolve()}/storage"
    # Where and how to run: today's settings; MLflow runs of the rebuild go to a store of its own.
    backend = ComputeBackend(
        spark=SparkConfig(
            master=os.environ.get("MLTRAIN_SPARK_MASTER", "local[*]"),
            conf_json=os.environ.get("MLTRAIN_SPARK_CONF", "{}"),
            s3a=os.environ.get("MLTRAIN_SPARK_S3A", "false"),
        ),
        sql_engine=os.environ.get("MLTRAIN_SQL_ENGINE", "spark"),
        engine_parity="false",
        mlflow_tracking_uri=f"sqlite:///{scratch.resolve()}/mlflow.db",
        mlflow_artifacts_uri=f"file://{scratch.resolve()}/mlartifacts",
    )
    rebuilt: dict[str, str] = {}
    steps = []
    env = {"SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")}
    logs = scratch / "logs"
    logs.mkdir(exist_ok=True)
    launches = [batch for level in _levels(root) for batch in _batches(level, store)]
    for number, batch in enumerate(launches, 1):
        unrecorded = [n for n in batch if not n.workload]
        if unrecorded:
            node = unrecorded[0]
            raise ValueError(
                f"{node.asset} {node.partition} v={node.version} does not record its workload: cannot rebuild"
            )
        params = backend.bind(_rebuild_params(batch, scratch_root, rebuilt, store))
        started = time.monotonic()
        what = f"{batch[0].asset} {batch[0].partition}" + (f" (+{len(batch) - 1} more)" if len(batch) > 1 else "")
        progress(f"[{number}/{len(launches)}] {what}: {batch[0].workload['module']}")
        log = logs / f"{number:03d}-{batch[0].asset}.log"
        # The launch path the assets use (a supervised local process), its output in the log.
        code = (
            LocalProcess(log=str(log))
            .launch(
                Launch(
                    workload=params.module,
                    command=params.command("python"),
                    timeout_s=max(resolve(profile, batch[0].asset).timeout_s for profile in PROFILES),
                    env=env,
                )
            )
            .returncodes[0]
        )
        seconds = round((time.monotonic() - started) / len(batch), 1)
        for node in batch:
            target = join_uri(scratch_root, store.relative(node.uri))
            again = read_manifest(target)
            if code != 0 or again is None:
                raise RuntimeError(f"rebuilding {node.asset} {node.partition} failed (exit {code}); see {log}")
            rebuilt[node.uri] = target
            files = {
                name: _same_file(node.uri, target, name, entry, again["files"].get(name, {}))
                for name, entry in node.manifest["files"].items()
            }
            steps.append(
                {
                    "asset": node.asset,
                    "partition": node.partition,
                    "version": node.version,
                    "seconds": seconds,
                    "files_identical": files,
                    "summary_differs": _same_summary(node.manifest.get("summary", {}), again.get("summary", {})),
                }
            )
    model_step = steps[-1]
    return {
        "model": model,
        "version": str(version),
        "scratch": str(scratch),
        "steps": steps,
        "metrics_equal": not model_step["summary_differs"],
        "weights_identical": all(model_step["files_identical"].values()),
        "all_identical": all(all(s["files_identical"].values()) and not s["summary_differs"] for s in steps),
    }


def describe_reproduction(report: dict[str, Any]) -> str:
    lines = [f"{report['model']} v{report['version']} rebuilt in {report['scratch']}:"]
    for step in report["steps"]:
        other = [n for n, ok in step["files_identical"].items() if not ok]
        head = f"  {step['asset']} {step['partition']} v={step['version']}"
        if not other and not step["summary_differs"]:
            lines.append(f"{head}: identical ({len(step['files_identical'])} files)")
            continue
        detail = f"files differ {other}" if other else "files identical"
        if step["summary_differs"]:
            detail += "; summary differs " + json.dumps(step["summary_differs"], default=str)
        lines.append(f"{head}: DIFFERS ({detail})")
    lines.append(
        f"metrics equal: {report['metrics_equal']}; model files (weights) identical: {report['weights_identical']}; "
        f"every version identical: {report['all_identical']}"
    )
    return "\n".join(lines)
