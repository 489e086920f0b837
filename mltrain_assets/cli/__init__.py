"""``mltrain``: simulate landing data, run the demo, show what is registered."""

from __future__ import annotations

import argparse
import sys
import warnings

from mltrain_assets.cli.commands import (
    _cmd_backfill,
    _cmd_demo,
    _cmd_dev,
    _cmd_heal,
    _cmd_init,
    _cmd_lineage,
    _cmd_manifests,
    _cmd_materialize,
    _cmd_relocate,
    _cmd_report,
    _cmd_reproduce,
    _cmd_schema,
    _cmd_simulate,
    _cmd_summary,
    _landing_dataset_names,
)
from mltrain_assets.registry import pipeline_names, specs
from mltrain_assets.simulate import option_name


def _add_init_parser(sub: argparse._SubParsersAction) -> None:
    init = sub.add_parser(
        "init",
        help="create MLTRAIN_HOME and DAGSTER_HOME, write the pool limits (MLTRAIN_POOL_LIMITS) into the instance; "
        "print the effective settings",
    )
    init.add_argument(
        "--pools",
        action="store_true",
        help="only write the pool limits into the instance at DAGSTER_HOME as it is (the Kubernetes init container)",
    )
    init.set_defaults(func=_cmd_init)


def _add_simulate_parser(sub: argparse._SubParsersAction) -> None:
    sim = sub.add_parser("simulate", help="write synthetic landing days")
    sim.add_argument("--dataset", choices=_landing_dataset_names(), required=True, help="landing dataset to simulate")
    sim.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    sim.add_argument("--end", help="last date, inclusive (default: --start)")
    volume_flags = [spec.simulator.volume_flag for spec in specs()]
    sim.add_argument("--rows-per-day", *volume_flags, dest="volume", type=int, help="rows per day (all keys)")
    _add_simulator_options(sim)
    sim.add_argument("--landing-uri", help="default: $MLTRAIN_LANDING_URI")
    sim.add_argument("--skip-landed", action="store_true", help="keep days whose _SUCCESS already exists")
    sim.set_defaults(func=_cmd_simulate)


def _add_simulator_options(parser: argparse.ArgumentParser) -> None:
    """Each registered simulator's own options (``--cities``, ``--users``, ...), as its spec declares them."""
    seen: set[str] = set()
    for spec in specs():
        for option in spec.simulator.options:
            if option.flag not in seen:
                seen.add(option.flag)
                parser.add_argument(option.flag, dest=option_name(option.flag), help=option.help)


def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="simulate, then materialize the pipelines for one date")
    demo.add_argument("--date", help="partition date (default: yesterday, UTC)")
    for spec in specs():
        demo.add_argument(
            spec.simulator.volume_flag,
            dest=f"volume_{spec.name}",
            type=int,
            help=f"{spec.landing_dataset.name} per day ({spec.name})",
        )
    demo.add_argument("--pipeline", action="append", choices=pipeline_names(), help="repeatable; default all")
    demo.add_argument("--parallel", type=int, default=2, help="city runs at once")
    demo.set_defaults(func=_cmd_demo)


def _add_summary_parser(sub: argparse._SubParsersAction) -> None:
    summary = sub.add_parser("summary", help="what is registered and aliased `staging`")
    summary.add_argument("--date", help="partition date, YYYY-MM-DD (default: yesterday, UTC)")
    summary.set_defaults(func=_cmd_summary)


def _add_dev_parser(sub: argparse._SubParsersAction) -> None:
    dev = sub.add_parser("dev", help="Dagster webserver + daemon and the MLflow UI on 127.0.0.1")
    dev.add_argument("--port", type=int, default=3000, help="Dagster UI port (default: %(default)s)")
    dev.add_argument("--mlflow-port", type=int, default=5000, help="MLflow UI port (default: %(default)s)")
    dev.set_defaults(func=_cmd_dev)


def _add_backfill_parser(sub: argparse._SubParsersAction) -> None:
    backfill = sub.add_parser("backfill", help="launch a date-range asset backfill through the Dagster webserver")
    backfill.add_argument("--start", required=True, help="first partition date, YYYY-MM-DD")
    backfill.add_argument("--end", required=True, help="last partition date, inclusive")
    backfill.add_argument("--pipeline", action="append", choices=pipeline_names(), help="repeatable; default all")
    key_flags = [spec.key_flag for spec in specs() if spec.key_flag]
    backfill.add_argument("--keys", *key_flags, dest="keys", help="comma-separated subset of keys for the keyed assets")
    backfill.add_argument("--url", default="http://127.0.0.1:3000", help="Dagster webserver (default: %(default)s)")
    backfill.add_argument("--wait", action="store_true", help="poll until the backfill finishes")
    backfill.add_argument("--timeout", type=float, default=3600, help="seconds --wait polls (default: %(default)s)")
    backfill.set_defaults(func=_cmd_backfill)


def _add_materialize_parser(sub: argparse._SubParsersAction) -> None:
    materialize = sub.add_parser(
        "materialize",
        help="materialize assets for one partition (or a range, in one run) in this process, recorded under the "
        "mltrain_assets code location like a UI launch (what `dagster asset materialize` does, without -m)",
    )
    materialize.add_argument("--asset", required=True, help="asset key(s), comma-separated, e.g. ride_events")
    partition = materialize.add_mutually_exclusive_group()
    partition.add_argument("--partition", help="partition key: 2026-11-27, or nyc|2026-11-27 for date x city")
    partition.add_argument("--partition-range", help="START...END, e.g. 2026-11-01...2026-11-07 (single-run assets)")
    materialize.set_defaults(func=_cmd_materialize)


def _add_heal_parser(sub: argparse._SubParsersAction) -> None:
    heal = sub.add_parser(
        "heal",
        help="fail the runs whose run worker died on this host (kill -9, OOM) and free the pool slots of runs "
        "that ended, so no dead run blocks a pool (what the daemon's run monitoring does; `mltrain materialize` "
        "and `mltrain demo` do it before each launch)",
    )
    heal.add_argument("--dry-run", action="store_true", help="only print what it would do")
    heal.set_defaults(func=_cmd_heal)


def _add_schema_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("schema", help="print the landing datasets' schemas and rules").set_defaults(func=_cmd_schema)


def _add_model_version_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="registered model name, e.g. demand-forecast-nyc or recommender")
    parser.add_argument("version", help="model version number")


def _add_lineage_parser(sub: argparse._SubParsersAction) -> None:
    lineage = sub.add_parser(
        "lineage",
        help="everything a registered model version came from: its runs, code commit, params, and every "
        "input version down to the landed days (with their fingerprints)",
    )
    _add_model_version_arguments(lineage)
    lineage.set_defaults(func=_cmd_lineage)


def _add_reproduce_parser(sub: argparse._SubParsersAction) -> None:
    reproduce = sub.add_parser(
        "reproduce",
        help="rebuild a registered model version from its lineage in a scratch store and say whether every "
        "file (the weights too) and the metrics are equal",
    )
    _add_model_version_arguments(reproduce)
    reproduce.add_argument("--scratch", help="folder to rebuild in (default: $MLTRAIN_HOME/reproductions/MODEL-vN)")
    reproduce.set_defaults(func=_cmd_reproduce)


def _add_relocate_parser(sub: argparse._SubParsersAction) -> None:
    relocate = sub.add_parser(
        "relocate",
        help="point MLflow's recorded artifact locations at a new root after moving them (a bucket renamed); "
        "a moved MLTRAIN_HOME is relocated automatically",
    )
    relocate.add_argument("--from", dest="old", required=True, help="the old root, e.g. s3://old-bucket/mlartifacts")
    relocate.add_argument("--to", dest="new", required=True, help="the new root, e.g. s3://new-bucket/mlartifacts")
    relocate.set_defaults(func=_cmd_relocate)


def _add_manifests_parser(sub: argparse._SubParsersAction) -> None:
    manifests = sub.add_parser(
        "manifests",
        help="print the Kubernetes objects the k8s backend would submit for one step (validated), like helm template",
    )
    manifests.add_argument("--asset", required=True, help="asset key, e.g. recommender_model")
    manifests.add_argument("--partition", help="partition key: 2026-11-27, or nyc|2026-11-27 for date x city")
    manifests.set_defaults(func=_cmd_manifests)


def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    from mltrain_assets.core.report import DEFAULT_GRACE_HOURS, DEFAULT_HISTORY_DAYS

    report = sub.add_parser(
        "report",
        help="model quality, cost and staleness for a date, from the Dagster instance and the registry: "
        "writes report.md and quality.png and prints the Markdown (what the model_quality_report asset shows)",
    )
    report.add_argument("--date", help="report date, YYYY-MM-DD (default: yesterday, UTC)")
    report.add_argument(
        "--out", help="folder to write report.md, quality.png, report.json (default: $MLTRAIN_HOME/reports/DATE)"
    )
    report.add_argument(
        "--history-days",
        type=int,
        default=DEFAULT_HISTORY_DAYS,
        help="dates the plot and the landing table cover, ending at --date (default: %(default)s)",
    )
    report.add_argument(
        "--grace-hours",
        type=float,
        default=DEFAULT_GRACE_HOURS,
        help="a landed day is late when its _SUCCESS marker appears later than this after the end of the day, UTC "
        "(default: %(default)s)",
    )
    report.set_defaults(func=_cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mltrain", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_init_parser(sub)
    _add_simulate_parser(sub)
    _add_demo_parser(sub)
    _add_summary_parser(sub)
    _add_dev_parser(sub)
    _add_backfill_parser(sub)
    _add_materialize_parser(sub)
    _add_heal_parser(sub)
    _add_schema_parser(sub)
    _add_lineage_parser(sub)
    _add_reproduce_parser(sub)
    _add_relocate_parser(sub)
    _add_manifests_parser(sub)
    _add_report_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Dagster flags beta/preview APIs on every use; the CLI's readers want progress, not that.
    warnings.filterwarnings("ignore", message=".*(beta|preview).*", category=Warning)
    try:
        parser = build_parser()  # reads the registered pipelines' specs (their datasets and options)
    except ValueError as refused:
        raise SystemExit(f"mltrain: {refused}") from None
    args = parser.parse_args(argv)
    if getattr(args, "command", None) in ("backfill", "demo") and not args.pipeline:
        args.pipeline = pipeline_names()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
