"""``mltrain reproduce``: rebuild a registered version's lineage in a scratch store and compare.

Each version of the lineage (``cli/lineage.py``) is rebuilt leaves first with the recorded workload
and params (where and how to run come from today's settings); what comes out is compared with
the original: every file's SHA-256 and the summary, less the values that say how long or where
something ran.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from mltrain_assets.artifacts import join_uri, read_json, read_manifest
from mltrain_assets.cli.lineage import Store, Version, field_roles, lineage, model_version_of, own_key, params_class
from mltrain_assets.workloads.common.params import WorkloadParams

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


def _workload(node: Version) -> dict[str, Any]:
    """The workload a version records (``reproduce`` refuses a batch with an unrecorded one before launching)."""
    workload = node.workload
    assert workload is not None
    return workload


def _rebuild_params(batch: list[Version], scratch_root: str, rebuilt: dict[str, str], store: Store) -> WorkloadParams:
    """The recorded params of a launch, its inputs the rebuilt versions and its outputs in the scratch store."""
    workload = _workload(batch[0])
    roles_of = field_roles(workload["module"])
    keys = {own_key(_workload(node)["params"], store.relative(node.uri)): node for node in batch}
    values = {}
    for name, value in workload["params"].items():
        if isinstance(value, dict) and None not in keys:  # a multi-date field: every date of the batch
            value = {key: _workload(node)["params"][name][key] for key, node in keys.items()}
        if roles_of.get(name) == "input":
            if name == "landing_uri":
                value = os.environ["MLTRAIN_LANDING_URI"]  # the landing zone is today's, the days are the same
            else:
                value = _remap(value, lambda u: rebuilt.get(store.here(u), store.here(u)))
        elif roles_of.get(name) == "output":
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
    from mltrain_assets.launch.workload_resources import PROFILES, resolve
    from mltrain_assets.resources.deployments import LocalCompute
    from mltrain_assets.resources.spark import SparkConfig

    record, root = lineage(model, version, storage_root)
    asset, recorded = model_version_of(record)
    store = Store(storage_root, recorded[: recorded.index(f"/{asset}/")])
    scratch.mkdir(parents=True, exist_ok=True)
    scratch_root = f"file://{scratch.resolve()}/storage"
    # Where and how to run: today's settings; MLflow runs of the rebuild go to a store of its own.
    backend = LocalCompute(
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
    steps: list[dict[str, Any]] = []
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
        progress(f"[{number}/{len(launches)}] {what}: {_workload(batch[0])['module']}")
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
