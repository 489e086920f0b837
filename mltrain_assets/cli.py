"""``mltrain``: simulate landing data, run the demo, show what is registered."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import warnings


def _cmd_init(args: argparse.Namespace) -> int:
    from mltrain_assets.demo import ensure_instance

    ensure_instance()
    for name in sorted(_effective_env()):
        print(f"{name}={os.environ[name]}")
    return 0


def _effective_env() -> dict[str, str]:
    from mltrain_assets.settings import apply_defaults

    return apply_defaults()


def _cmd_simulate(args: argparse.Namespace) -> int:
    from mltrain_assets.simulate import simulate

    env = _effective_env()
    landing = args.landing_uri or env["MLTRAIN_LANDING_URI"]
    started = time.monotonic()
    cities = args.cities.split(",") if args.cities else None
    total = 0

    def progress(date: str, summary: dict) -> None:
        nonlocal total
        total += int(summary.get("rows", 0))
        print(
            f"[simulate +{time.monotonic() - started:5.1f}s] {args.dataset} {date}: {summary.get('rows', summary.get('skipped'))}",
            flush=True,
        )

    simulate(
        args.dataset,
        landing,
        args.start,
        args.end or args.start,
        volume=args.volume,
        cities=cities,
        skip_landed=args.skip_landed,
        progress=progress,
    )
    print(f"wrote {total:,} {args.dataset} rows under {landing}/{args.dataset} in {time.monotonic() - started:.1f}s")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from mltrain_assets import demo
    from mltrain_assets.simulate import simulate
    from mltrain_assets.workloads.demand_config import INPUT_DAYS

    env = _effective_env()
    demo.ensure_instance()
    date = args.date or demo.latest_complete_day()
    started = time.monotonic()
    print(f"mltrain demo for {date}; state in {env['MLTRAIN_HOME']}", flush=True)
    outcomes = []
    if "demand" in args.pipeline:
        first = (dt.date.fromisoformat(date) - dt.timedelta(days=INPUT_DAYS - 1)).isoformat()
        _simulate_rides(env, first, date, args, started)
        outcomes += demo.run_demand_pipeline(date, parallel=args.parallel, started=started)
    if "recsys" in args.pipeline:
        from mltrain_assets.workloads.recsys_config import EMBEDDING_WINDOW_DAYS

        first = (dt.date.fromisoformat(date) - dt.timedelta(days=EMBEDDING_WINDOW_DAYS)).isoformat()
        demo._say(f"simulating interactions {first}..{date}", started)
        simulate("interactions", env["MLTRAIN_LANDING_URI"], first, date, volume=args.events_per_day, skip_landed=True)
        outcomes += demo.run_recsys_pipeline(date, started=started)
    failed = [o for o in outcomes if not o.success]
    print()
    if "demand" in args.pipeline:
        print(_demand_summary(date))
    if "recsys" in args.pipeline:
        print(_recsys_summary(date))
    print(
        f"data-plane versions built this time: {demo.data_plane_work(outcomes)}; "
        f"model versions registered this time: {demo.new_registrations(outcomes)}; "
        f"runs: {len(outcomes)} ({len(failed)} failed); {time.monotonic() - started:.0f}s"
    )
    print("See it all: `make dev` (Dagster UI and MLflow UI on the same state).")
    return 1 if failed else 0


def _simulate_rides(env: dict, first: str, date: str, args: argparse.Namespace, started: float) -> None:
    from mltrain_assets import demo
    from mltrain_assets.partitions import configured_cities
    from mltrain_assets.simulate import simulate

    demo._say(
        f"simulating rides {first}..{date} into {env['MLTRAIN_LANDING_URI']} (days already landed are kept)", started
    )
    simulate(
        "rides",
        env["MLTRAIN_LANDING_URI"],
        first,
        date,
        volume=args.rides_per_day,
        cities=configured_cities(),
        skip_landed=True,
    )


def _recsys_summary(date: str) -> str:
    from mlflow.tracking import MlflowClient

    from mltrain_assets.workloads.recsys_config import REGISTERED_MODEL_NAME

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    try:
        version = client.get_model_version_by_alias(REGISTERED_MODEL_NAME, "staging")
    except Exception:
        return f"recommendations, {date}: no `staging` version of {REGISTERED_MODEL_NAME}"
    tags = version.tags
    lineage = sum(
        1
        for k in ("mltrain.code_commit", "mltrain.data_snapshot", "mltrain.dagster_run_id", "mltrain.partition")
        if tags.get(k)
    )
    return (
        f"recommendations, {date}: {REGISTERED_MODEL_NAME} v{version.version} is `staging` "
        f"(AUC {float(tags.get('mltrain.metric.auc', 'nan')):.3f}, partition {tags.get('mltrain.partition')}, {lineage}/4 lineage tags; "
        f"{tags.get('mltrain.promotion', '')})"
    )


def _demand_summary(date: str) -> str:
    from mlflow.tracking import MlflowClient

    from mltrain_assets.partitions import configured_cities
    from mltrain_assets.workloads.demand_config import registered_model_name

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    lines = [
        f"demand forecasting, {date}: `staging` per city",
        f"{'model':<26}{'version':>8}{'MAPE':>8}  {'partition':<22}lineage",
    ]
    for city in configured_cities():
        name = registered_model_name(city)
        try:
            version = client.get_model_version_by_alias(name, "staging")
        except Exception:
            lines.append(f"{name:<26}{'-':>8}")
            continue
        tags = version.tags
        lineage = [
            k
            for k in ("mltrain.code_commit", "mltrain.data_snapshot", "mltrain.dagster_run_id", "mltrain.partition")
            if tags.get(k)
        ]
        mape = tags.get("mltrain.metric.mape", "")
        mape = f"{float(mape):.3f}" if mape else "-"
        lines.append(
            f"{name:<26}{version.version:>8}{mape:>8}  {tags.get('mltrain.partition', ''):<22}{len(lineage)}/4 tags"
        )
    return "\n".join(lines)


def _cmd_summary(args: argparse.Namespace) -> int:
    from mltrain_assets.demo import latest_complete_day

    _effective_env()
    print(_demand_summary(args.date or latest_complete_day()))
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from mltrain_assets.schemas import DATASETS

    for spec in DATASETS.values():
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
    from mltrain_assets.devstack import DevStack

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
    from mltrain_assets.backfill import launch_backfill, wait_for_backfill

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mltrain", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("init", help="create MLTRAIN_HOME and DAGSTER_HOME; print the effective settings").set_defaults(
        func=_cmd_init
    )

    sim = sub.add_parser("simulate", help="write synthetic landing days")
    sim.add_argument("--dataset", choices=["rides", "interactions"], required=True)
    sim.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    sim.add_argument("--end", help="last date, inclusive (default: --start)")
    sim.add_argument("--rides-per-day", "--events-per-day", dest="volume", type=int, help="rows per day (all cities)")
    sim.add_argument("--cities", help="comma-separated subset of cities (rides)")
    sim.add_argument("--landing-uri", help="default: $MLTRAIN_LANDING_URI")
    sim.add_argument("--skip-landed", action="store_true", help="keep days whose _SUCCESS already exists")
    sim.set_defaults(func=_cmd_simulate)

    demo = sub.add_parser("demo", help="simulate, then materialize the pipelines for one date")
    demo.add_argument("--date", help="partition date (default: yesterday, UTC)")
    demo.add_argument("--rides-per-day", type=int, default=None)
    demo.add_argument("--events-per-day", type=int, default=None, help="interactions per day")
    demo.add_argument("--pipeline", action="append", choices=["demand", "recsys"], help="repeatable; default both")
    demo.add_argument("--parallel", type=int, default=2, help="city runs at once")
    demo.set_defaults(func=_cmd_demo)

    summary = sub.add_parser("summary", help="what is registered and aliased `staging`")
    summary.add_argument("--date")
    summary.set_defaults(func=_cmd_summary)

    dev = sub.add_parser("dev", help="Dagster webserver + daemon and the MLflow UI on 127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    dev.add_argument("--mlflow-port", type=int, default=5000)
    dev.set_defaults(func=_cmd_dev)

    backfill = sub.add_parser("backfill", help="launch a date-range asset backfill through the Dagster webserver")
    backfill.add_argument("--start", required=True)
    backfill.add_argument("--end", required=True)
    backfill.add_argument("--pipeline", action="append", choices=["demand", "recsys"], help="repeatable; default both")
    backfill.add_argument("--cities", help="comma-separated subset for the per-city assets")
    backfill.add_argument("--url", default="http://127.0.0.1:3000")
    backfill.add_argument("--wait", action="store_true", help="poll until the backfill finishes")
    backfill.add_argument("--timeout", type=float, default=3600)
    backfill.set_defaults(func=_cmd_backfill)

    sub.add_parser("schema", help="print the landing datasets' schemas and rules").set_defaults(func=_cmd_schema)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Dagster flags beta/preview APIs on every use; the CLI's readers want progress, not that.
    warnings.filterwarnings("ignore", message=".*(beta|preview).*", category=Warning)
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) in ("backfill", "demo") and not args.pipeline:
        args.pipeline = ["demand", "recsys"]
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
