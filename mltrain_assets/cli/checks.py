"""The checks each ``mltrain`` command makes of what it was given, before any work starts.

Each raises ``UsageError`` (``cli/errors.py``) naming the bad value and what would be valid; none writes anything
(no instance, no MLflow store, no landing day is created to find out).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mltrain_assets.cli.errors import (
    UsageError,
    check_date_order,
    check_keys_value,
    check_partition_date,
    check_positive,
    one_of,
    parse_date,
)


def check_pipeline_date(pipeline_names: Sequence[str], date: str, flag: str = "--date") -> str:
    """A partition date whose landing windows (the days before it each pipeline reads) lie inside the partitions."""
    from mltrain_assets.registry import pipeline_spec

    date = parse_date(date, flag)
    firsts = [x.window.first(date) for name in pipeline_names for x in pipeline_spec(name).landing_datasets]
    return check_partition_date(date, flag, reads_from=min(firsts, default=date))


def check_date_range(start: str, end: str, pipeline_names: Sequence[str]) -> None:
    """``--start``..``--end``: in order, and both partition dates (``--start`` with its landing window)."""
    check_date_order(parse_date(start, "--start"), parse_date(end, "--end"))
    check_pipeline_date(pipeline_names, start, "--start")
    check_partition_date(end, "--end")


def check_simulate(args: Any) -> dict[str, Any]:
    """``mltrain simulate``: dates in order, a positive volume and the dataset's own options (its keys known)."""
    from mltrain_assets.registry import landing_pipeline, simulator
    from mltrain_assets.simulate import simulator_kwargs

    check_date_order(args.start, args.end or args.start)
    check_positive(args.volume, "--rows-per-day")
    sim = simulator(args.dataset)
    given = {
        name: getattr(args, name)
        for name in vars(args)
        if name not in {"dataset", "start", "end", "volume", "landing_uri", "skip_landed"}
        and getattr(args, name) is not None
    }
    keys = landing_pipeline(args.dataset).keys
    if sim.keys_option and keys and given.get(sim.keys_option) is not None:
        # The simulator writes the pipeline's configured keys (its key setting), a subset of them when given.
        check_keys_value(given[sim.keys_option], keys, f"--{sim.keys_option.replace('_', '-')}")
    try:
        return simulator_kwargs(args.dataset, args.volume, given)
    except ValueError as refused:
        raise UsageError(str(refused)) from None


def check_landing_uri(uri: str | None, flag: str = "--landing-uri") -> None:
    from mltrain_assets.settings import SETTING_RULES

    usable, accepted = SETTING_RULES["MLTRAIN_LANDING_URI"]
    if uri is not None and not usable(uri):
        raise UsageError(f"{flag} {uri!r}: expected {accepted}")


def check_keys(pipeline_names: Sequence[str], keys: str | None, flag: str | None = None) -> list[str] | None:
    """``--keys`` of a backfill: a subset of the configured keys of the keyed pipelines selected."""
    from mltrain_assets.registry import pipeline_spec

    if keys is None:
        return None
    settings = [setting for name in pipeline_names if (setting := pipeline_spec(name).keys)]
    if not settings:
        raise UsageError(f"{flag or '--keys'} {keys!r}: none of the pipelines {one_of(pipeline_names)} has keys")
    chosen = None
    for setting in settings:  # each keyed pipeline selected must know every key given
        chosen = check_keys_value(keys, setting, flag or setting.flag)
    return chosen


def model_names() -> list[str]:
    """Every registered model name the pipelines register (one per key of a keyed model)."""
    from mltrain_assets.core.pipeline import all_pipelines

    names = []
    for pipeline in all_pipelines():
        quality = pipeline.quality
        if quality is None:
            continue
        keys = pipeline.keys() if pipeline.keys and pipeline.keyed_assets else [""]
        names += [quality.model_name(key) for key in keys]
    return names


def check_model_version(model: str, version: str) -> None:
    """A model the pipelines register and a version of it the registry holds (the registry is only read)."""
    names = model_names()
    if model not in names:
        raise UsageError(f"unknown model {model!r}: expected {one_of(names)}")
    if not version.isdigit() or int(version) < 1:
        raise UsageError(f"version {version!r} is not a version number: expected 1, 2, ... (see `mltrain summary`)")
    versions = registered_versions(model)
    if version not in versions:
        held = f"registered versions: {one_of(sorted(versions, key=int))}" if versions else "none is registered yet"
        raise UsageError(f"{model} has no version {version}: {held}")


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def registered_versions(model: str) -> list[str]:
    """The versions the registry holds of ``model``; reading a local store that does not exist creates nothing."""
    tracking = os.environ["MLFLOW_TRACKING_URI"]
    path = _sqlite_path(tracking)
    if path is not None and not path.exists():
        return []
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        found = MlflowClient(tracking).search_model_versions(f"name = '{model}'")
    except MlflowException as refused:
        raise UsageError(f"MLFLOW_TRACKING_URI {tracking}: {str(refused).splitlines()[0]}") from None
    return [str(v.version) for v in found]


def asset_keys() -> list[str]:
    from mltrain_assets.definitions import defs

    return sorted(key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys())


def check_assets(assets: Sequence[str], flag: str = "--asset") -> None:
    known = asset_keys()
    unknown = [asset for asset in assets if asset not in known]
    if unknown:
        raise UsageError(f"{flag}: unknown asset {unknown[0]!r}: expected {one_of(known, limit=40)}")


def check_partition(assets: Sequence[str], partition: str, flag: str = "--partition") -> str:
    """A partition key of the assets (``nyc|2026-11-27`` or ``2026-11-27|nyc`` for date x city); dates checked first.

    Each part that looks like a date must be a partition date; each other part a key of its dimension.
    """
    from dagster import AssetKey, MultiPartitionsDefinition, TimeWindowPartitionsDefinition

    from mltrain_assets.definitions import defs

    parts = partition.split("|")
    for part in parts:
        if part[:1].isdigit():
            check_partition_date(part, flag)
    dates = [p for p in parts if p[:1].isdigit()]
    keys = [p for p in parts if not p[:1].isdigit()]
    for asset in assets:
        partitions_def = defs.resolve_assets_def(AssetKey.from_user_string(asset)).partitions_def
        if partitions_def is None:
            raise UsageError(f"{flag} {partition!r}: {asset} has no partitions: drop {flag}")
        # (name, definition) of each dimension keyed by something other than a date
        by_key: list[tuple[str, Any]]
        if isinstance(partitions_def, MultiPartitionsDefinition):
            dimensions = partitions_def.partitions_defs
            by_key = [
                (d.name, d.partitions_def)
                for d in dimensions
                if not isinstance(d.partitions_def, TimeWindowPartitionsDefinition)
            ]
            shape = " x ".join(d.name for d in dimensions)
        else:
            by_key = [] if isinstance(partitions_def, TimeWindowPartitionsDefinition) else [("key", partitions_def)]
            shape = "key" if by_key else "date"
        if len(dates) != len(parts) - len(by_key) or len(keys) != len(by_key):
            raise UsageError(
                f"{flag} {partition!r}: {asset} is partitioned by {shape}: expected e.g. "
                f"{partitions_def.get_last_partition_key()}"
            )
        for key, (named, dimension) in zip(keys, by_key, strict=True):
            valid = dimension.get_partition_keys()
            if key not in valid:
                raise UsageError(f"{flag} {partition!r}: unknown {named} {key!r}: expected {one_of(valid)}")
    return partition


def check_partition_range(assets: Sequence[str], span: str, flag: str = "--partition-range") -> tuple[str, str]:
    parts = span.split("...")
    if len(parts) != 2 or not all(parts):
        raise UsageError(f"{flag} {span!r}: expected START...END, e.g. 2026-11-01...2026-11-07")
    start, end = parts
    check_partition(assets, start, flag)
    check_partition(assets, end, flag)
    check_date_order(start, end, f"{flag} start", "end")
    return start, end


def check_store_root(uri: str, flag: str) -> str:
    if not uri.startswith(("s3://", "file:///", "gs://", "/")):
        raise UsageError(f"{flag} {uri!r} is not a storage root: expected s3://bucket/prefix or file:///absolute/path")
    return uri


def check_relocatable_store(tracking: str) -> None:
    """``relocate`` rewrites a database-backed MLflow store that exists (it never creates one)."""
    if not tracking.startswith(("sqlite:", "postgresql", "mysql", "mssql")):
        raise UsageError(
            f"MLFLOW_TRACKING_URI={tracking!r}: only a database-backed MLflow store (sqlite:///..., postgresql://...) "
            "records locations to rewrite"
        )
    path = _sqlite_path(tracking)
    if path is not None and not path.exists():
        raise UsageError(
            f"MLFLOW_TRACKING_URI={tracking!r}: no such store ({path} does not exist): nothing to relocate"
        )


def check_port_free(port: int, flag: str) -> None:
    """A port in 1..65535 that nothing on 127.0.0.1 listens on yet."""
    if not 1 <= port <= 65535:
        raise UsageError(f"{flag} {port}: expected a port from 1 to 65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise UsageError(f"{flag} {port} is in use on 127.0.0.1: stop what listens there or pick another {flag}")


def check_demo(args: Any, pipeline_names: Sequence[str]) -> str:
    """``mltrain demo``: its date (default yesterday, UTC) and the landing days before it are partitions; sizes > 0."""
    from mltrain_assets.cli.errors import latest_partition
    from mltrain_assets.registry import pipeline_spec

    check_positive(args.parallel, "--parallel")
    for name in pipeline_names:
        for landing in pipeline_spec(name).landing_datasets:
            check_positive(getattr(args, f"volume_{landing.name}", None), landing.simulator.volume_flag)
    return check_pipeline_date(pipeline_names, args.date or latest_partition(), "--date")


def check_backfill(args: Any, pipeline_names: Sequence[str]) -> list[str] | None:
    """``mltrain backfill``: the range, the keys, the timeout, and a webserver answering at ``--url``."""
    from mltrain_assets.cli.errors import check_reachable

    check_date_range(args.start, args.end, pipeline_names)
    keys = check_keys(pipeline_names, args.keys)
    check_positive(args.timeout, "--timeout", minimum=0.001)
    check_reachable(args.url, "--url")
    return keys


def check_materialize(args: Any) -> tuple[list[str], tuple[str, str] | None]:
    """``mltrain materialize``: known assets, and a partition (or range) of theirs."""
    assets = [asset.strip() for asset in args.asset.split(",") if asset.strip()]
    if not assets:
        raise UsageError(f"--asset {args.asset!r} names no asset: expected e.g. --asset ride_events")
    check_assets(assets)
    if args.partition and args.partition_range:
        raise UsageError("--partition and --partition-range both given: expected one of them")
    if args.partition:
        check_partition(assets, args.partition)
    span = check_partition_range(assets, args.partition_range) if args.partition_range else None
    return assets, span
