"""``mltrain``: simulate landing data, run the demo, show what is registered."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

from mltrain_assets.registry import PIPELINES


def _landing_dataset_names() -> list[str]:
    from mltrain_assets.registry import landing_datasets

    return sorted(landing_datasets())


def _cmd_init(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from mltrain_assets.cli.demo import ensure_instance, init_pools

    try:
        if args.pools:
            # Kubernetes: the instance is the chart's (DAGSTER_HOME, read-only); only its pool limits are ours.
            with DagsterInstance.get() as instance:
                changes = init_pools(instance)
        else:
            env = _effective_env()
            changes = init_pools(ensure_instance())
            for name in sorted(env):
                print(f"{name}={os.environ[name]}")
    except (ValueError, RuntimeError) as refused:  # a bad MLTRAIN_POOL_LIMITS, a pool that would not converge
        raise SystemExit(f"mltrain init: {refused}") from None
    for change in changes:
        print(change.line())
    return 0


def _effective_env() -> dict[str, str]:
    from mltrain_assets.settings import SettingsError, apply_defaults, validate_settings

    env = apply_defaults()
    try:
        validate_settings()
    except SettingsError as refused:
        raise SystemExit(f"mltrain: {refused}") from None
    return env


def _cmd_simulate(args: argparse.Namespace) -> int:
    from mltrain_assets.simulate import simulate

    env = _effective_env()
    landing = args.landing_uri or env["MLTRAIN_LANDING_URI"]
    started = time.monotonic()
    cities = args.cities.split(",") if args.cities else None
    total = 0

    def progress(date: str, summary: dict) -> None:
        nonlocal total
        rows = summary.get("rows", summary.get("events"))  # rides count rows, interactions events
        total += int(rows or 0)
        print(
            f"[simulate +{time.monotonic() - started:5.1f}s] {args.dataset} {date}: {rows or summary.get('skipped')}",
            flush=True,
        )

    simulate(
        args.dataset,
        landing,
        args.start,
        args.end or args.start,
        volume=args.volume,
        cities=cities,
        users=args.users,
        items=args.items,
        skip_landed=args.skip_landed,
        progress=progress,
    )
    print(f"wrote {total:,} {args.dataset} rows under {landing}/{args.dataset} in {time.monotonic() - started:.1f}s")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from mltrain_assets.cli import demo
    from mltrain_assets.core.pipeline import load_pipeline

    env = _effective_env()
    demo.init_pools(demo.ensure_instance())
    demo.ensure_tracking_store()
    date = args.date or demo.latest_complete_day()
    started = time.monotonic()
    print(f"mltrain demo for {date}; state in {env['MLTRAIN_HOME']}", flush=True)
    pipelines = [load_pipeline(name) for name in args.pipeline]
    with _cluster_spark_for_k8s_local(env, started):
        outcomes = _run_demo_pipelines(pipelines, date, env, args, started)
    demo._say(f"model_quality_report for {date}", started)
    outcomes.append(demo.execute("model_quality_report_job", "model_quality_report", partition_key=date))
    failed = [o for o in outcomes if not o.success]
    print()
    for pipeline in pipelines:
        print(pipeline.summary(date))
    print(
        f"data-plane versions built this time: {demo.data_plane_work(outcomes)}; "
        f"model versions registered this time: {demo.new_registrations(outcomes)}; "
        f"runs: {len(outcomes)} ({len(failed)} failed); {time.monotonic() - started:.0f}s"
    )
    print(
        f"Quality, cost and staleness for {date}: `mltrain report --date {date}` "
        "(also the model_quality_report asset). See it all: `make dev` (Dagster UI and MLflow UI on the same state)."
    )
    return 1 if failed else 0


def _run_demo_pipelines(pipelines, date: str, env: dict, args: argparse.Namespace, started: float) -> list:
    from mltrain_assets.cli import demo
    from mltrain_assets.simulate import simulate

    outcomes = []
    for pipeline in pipelines:
        dates = pipeline.landing_window.dates(date)
        demo._say(
            f"simulating {pipeline.landing_dataset} {dates[0]}..{dates[-1]} into {env['MLTRAIN_LANDING_URI']} "
            "(days already landed are kept)",
            started,
        )
        volume = args.rides_per_day if pipeline.landing_dataset == "rides" else args.events_per_day
        keys = pipeline.keys() if pipeline.keys else None
        simulate(
            pipeline.landing_dataset, env["MLTRAIN_LANDING_URI"], dates[0], dates[-1], volume=volume, cities=keys,
            skip_landed=True,
        )  # fmt: skip
        outcomes += demo.run_pipeline(pipeline, date, parallel=args.parallel, started=started)
    return outcomes


@contextlib.contextmanager
def _cluster_spark_for_k8s_local(env: dict, started: float):
    """In k8s-local mode Spark runs on a standalone master + worker on 127.0.0.1, as on a cluster."""
    from mltrain_assets.cli import demo

    if os.environ.get("MLTRAIN_COMPUTE") != "k8s-local" or not env["MLTRAIN_SPARK_MASTER"].startswith("local"):
        yield
        return
    from mltrain_assets.cli.sparkcluster import LocalSparkCluster

    with LocalSparkCluster(Path(env["MLTRAIN_HOME"]) / "logs" / "spark") as url:
        demo._say(f"k8s-local: Spark on a standalone master + worker at {url}", started)
        os.environ["MLTRAIN_SPARK_MASTER"] = url
        try:
            yield
        finally:
            os.environ["MLTRAIN_SPARK_MASTER"] = env["MLTRAIN_SPARK_MASTER"]


def _cmd_summary(args: argparse.Namespace) -> int:
    from mltrain_assets.cli.demo import latest_complete_day
    from mltrain_assets.core.pipeline import all_pipelines

    _effective_env()
    date = args.date or latest_complete_day()
    print("\n\n".join(pipeline.summary(date) for pipeline in all_pipelines()))
    return 0


def _cmd_lineage(args: argparse.Namespace) -> int:
    from mltrain_assets.cli.lineage import describe, lineage

    env = _effective_env()
    record, root = lineage(args.model, args.version, env["MLTRAIN_STORAGE_URI"])
    print(describe(record, root))
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mltrain_assets.cli.lineage import describe_reproduction, reproduce

    env = _effective_env()
    scratch = Path(args.scratch or Path(env["MLTRAIN_HOME"]) / "reproductions" / f"{args.model}-v{args.version}")
    report = reproduce(args.model, args.version, env["MLTRAIN_STORAGE_URI"], scratch)
    print(describe_reproduction(report))
    return 0 if report["metrics_equal"] else 1


def _cmd_relocate(args: argparse.Namespace) -> int:
    from mltrain_assets.relocate import relocate_mlflow

    env = _effective_env()
    rows = relocate_mlflow(env["MLFLOW_TRACKING_URI"], args.old, args.new)
    print(f"{rows} MLflow artifact locations moved from {args.old} to {args.new}")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from mltrain_assets.registry import landing_datasets

    for spec in landing_datasets().values():
        print(
            json.dumps(
                {
                    "dataset": spec.name,
                    "columns": {f.name: str(f.type) for f in spec.schema},
                    "unique": spec.id_column,
                    "rules": spec.row_rules,
                },
                indent=2,
            )
        )
    return 0


def _cmd_dev(args: argparse.Namespace) -> int:
    from mltrain_assets.cli.devstack import DevStack

    env = _effective_env()
    stack = DevStack(dagster_port=args.port, mlflow_port=args.mlflow_port).start()
    print(f"Dagster UI  {stack.dagster_url}   (webserver + daemon: sensors, schedules, automation, backfills)")
    print(f"MLflow UI   {stack.mlflow_url}   (store {env['MLFLOW_TRACKING_URI']})")
    print(f"state in {env['MLTRAIN_HOME']}; logs in {env['MLTRAIN_HOME']}/logs; Ctrl-C stops everything", flush=True)
    try:
        while all(s.process.poll() is None for s in stack.services):
            time.sleep(1)
        print("a service exited; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


def _cmd_backfill(args: argparse.Namespace) -> int:
    from mltrain_assets.cli.backfill import launch_backfill, wait_for_backfill

    cities = args.cities.split(",") if args.cities else None
    status = 0
    for pipeline in args.pipeline:
        backfill_id = launch_backfill(args.url, pipeline, args.start, args.end, cities)
        print(
            f"launched {pipeline} backfill {backfill_id} for {args.start}..{args.end}: {args.url}/runs/b/{backfill_id}"
        )
        if args.wait:
            result = wait_for_backfill(args.url, backfill_id, timeout_s=args.timeout)
            status |= result["status"] not in ("COMPLETED", "COMPLETED_SUCCESS")
    return status


def _cmd_materialize(args: argparse.Namespace) -> int:
    from mltrain_assets.cli import demo

    _effective_env()
    span = tuple(args.partition_range.split("...")) if args.partition_range else None
    if span is not None and len(span) != 2:
        raise SystemExit(f"--partition-range {args.partition_range}: expected START...END")
    try:
        outcome = demo.materialize(args.asset.split(","), partition=args.partition, partition_range=span)
    except ValueError as refused:
        raise SystemExit(f"mltrain materialize: {refused}") from None
    demo.print_outcome(outcome)
    return 0 if outcome.success else 1


def _cmd_heal(args: argparse.Namespace) -> int:
    from mltrain_assets.cli.demo import ensure_instance
    from mltrain_assets.core.heal import heal

    _effective_env()
    report = heal(ensure_instance(), dry_run=args.dry_run)
    for line in report.lines():
        print(line)
    if not report.lines():
        print("no runs in progress and no pool slots held")
    verb = "would fail" if args.dry_run else "failed"
    print(
        f"{verb} {len(report.failed)} run(s) whose run worker is gone; "
        f"{'would free' if args.dry_run else 'freed'} the pool slots of {len(report.freed)} run(s); "
        f"{len(report.running)} running, {len(report.unknown)} left to the daemon's run monitoring"
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from mltrain_assets.cli.demo import ensure_instance, latest_complete_day
    from mltrain_assets.core.pipeline import all_pipelines
    from mltrain_assets.core.report import write_report
    from mltrain_assets.pipelines.reporting.collect import collect_report
    from mltrain_assets.resources.tracking import ModelRegistry

    env = _effective_env()
    date = args.date or latest_complete_day()
    report = collect_report(
        ensure_instance(),
        date,
        all_pipelines(),
        landing_uri=env["MLTRAIN_LANDING_URI"],
        registry=ModelRegistry(tracking_uri=env["MLFLOW_TRACKING_URI"]),
        history_days=args.history_days,
        grace_hours=args.grace_hours,
    )
    markdown_path, png_path, markdown = write_report(report, args.out or Path(env["MLTRAIN_HOME"]) / "reports" / date)
    print(markdown)
    print(f"wrote {markdown_path} and {png_path}", file=sys.stderr)
    return 0


def _cmd_manifests(args: argparse.Namespace) -> int:
    from mltrain_assets.cli import manifests

    _effective_env()
    return manifests.main(args.asset, args.partition)


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
    sim.add_argument("--rides-per-day", "--events-per-day", dest="volume", type=int, help="rows per day (all cities)")
    sim.add_argument("--cities", help="comma-separated subset of cities (rides)")
    sim.add_argument("--users", type=int, help="users in the simulated world (interactions; default 10,000)")
    sim.add_argument("--items", type=int, help="items in the simulated world (interactions; default 1,000)")
    sim.add_argument("--landing-uri", help="default: $MLTRAIN_LANDING_URI")
    sim.add_argument("--skip-landed", action="store_true", help="keep days whose _SUCCESS already exists")
    sim.set_defaults(func=_cmd_simulate)


def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="simulate, then materialize the pipelines for one date")
    demo.add_argument("--date", help="partition date (default: yesterday, UTC)")
    demo.add_argument("--rides-per-day", type=int, default=None, help="rides per day (all cities)")
    demo.add_argument("--events-per-day", type=int, default=None, help="interactions per day")
    demo.add_argument("--pipeline", action="append", choices=PIPELINES, help="repeatable; default all")
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
    backfill.add_argument("--pipeline", action="append", choices=PIPELINES, help="repeatable; default all")
    backfill.add_argument("--cities", help="comma-separated subset for the per-city assets")
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


def _add_lineage_parser(sub: argparse._SubParsersAction) -> None:
    lineage = sub.add_parser(
        "lineage",
        help="everything a registered model version came from: its runs, code commit, params, and every "
        "input version down to the landed days (with their fingerprints)",
    )
    lineage.add_argument("model", help="registered model name, e.g. demand-forecast-nyc or recommender")
    lineage.add_argument("version", help="model version number")
    lineage.set_defaults(func=_cmd_lineage)


def _add_reproduce_parser(sub: argparse._SubParsersAction) -> None:
    reproduce = sub.add_parser(
        "reproduce",
        help="rebuild a registered model version from its lineage in a scratch store and say whether every "
        "file (the weights too) and the metrics are equal",
    )
    reproduce.add_argument("model", help="registered model name")
    reproduce.add_argument("version", help="model version number")
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
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) in ("backfill", "demo") and not args.pipeline:
        args.pipeline = list(PIPELINES)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
