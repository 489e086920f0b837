"""The registered-model commands: ``lineage``, ``reproduce`` and ``relocate`` (MLflow's artifact locations)."""

from __future__ import annotations

import argparse
import dataclasses
import json

from mltrain_assets.cli.commands import _effective_env
from mltrain_assets.cli.errors import UsageError


def _cmd_lineage(args: argparse.Namespace) -> int:
    from mltrain_assets.cli.checks import check_model_version
    from mltrain_assets.cli.lineage import describe, lineage

    env = _effective_env()
    check_model_version(args.model, args.version)
    record, root = lineage(args.model, args.version, env["MLTRAIN_STORAGE_URI"])
    if args.as_json:
        print(json.dumps({"registered": record, "built_from": dataclasses.asdict(root)}, indent=2, default=str))
        return 0
    print(describe(record, root))
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mltrain_assets.cli.checks import check_model_version
    from mltrain_assets.cli.reproduce import describe_reproduction, reproduce

    env = _effective_env()
    check_model_version(args.model, args.version)
    scratch = Path(args.scratch or Path(env["MLTRAIN_HOME"]) / "reproductions" / f"{args.model}-v{args.version}")
    report = reproduce(args.model, args.version, env["MLTRAIN_STORAGE_URI"], scratch)
    print(describe_reproduction(report))
    return 0 if report["metrics_equal"] else 1


def _cmd_relocate(args: argparse.Namespace) -> int:
    from mltrain_assets.cli.checks import check_relocatable_store, check_store_root
    from mltrain_assets.relocate import relocate_mlflow

    check_store_root(args.old, "--from")
    check_store_root(args.new, "--to")
    if args.old.rstrip("/") == args.new.rstrip("/"):
        raise UsageError(f"--from and --to are both {args.old}: expected the old root and a different new one")
    env = _effective_env()
    check_relocatable_store(env["MLFLOW_TRACKING_URI"])
    rows = relocate_mlflow(env["MLFLOW_TRACKING_URI"], args.old, args.new)
    print(f"{rows} MLflow artifact locations moved from {args.old} to {args.new}")
    return 0
