"""The ``mltrain`` subcommands: one handler each (``_cmd_<name>(args) -> exit code``); the parser is in ``__init__``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from mltrain_assets.cli.errors import UsageError


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
    except ValueError as refused:  # a bad MLTRAIN_POOL_LIMITS
        raise UsageError(str(refused)) from None
    except RuntimeError as refused:  # a pool that would not converge
        raise SystemExit(f"mltrain init: {refused}") from None
    for change in changes:
        print(change.line())
    return 0


def _effective_env() -> dict[str, str]:
    from mltrain_assets.cli.errors import check_settings

    return check_settings()


def _simulator_options(args: argparse.Namespace) -> dict:
    from mltrain_assets.registry import specs
    from mltrain_assets.simulate import option_name

    names = {option_name(o.flag) for spec in specs() for x in spec.landing_datasets for o in x.simulator.options}
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _cmd_simulate(args: argparse.Namespace) -> int:
    from mltrain_assets.cli.checks import check_landing_uri, check_simulate
    from mltrain_assets.simulate import simulate

    check_simulate(args)
    check_landing_uri(args.landing_uri)
    env = _effective_env()
    landing = args.landing_uri or env["MLTRAIN_LANDING_URI"]
    started = time.monotonic()
    total = 0

    def progress(date: str, summary: dict) -> None:
        nonlocal total
        rows = summary.get("rows", summary.get("events"))
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
        **_simulator_options(args),
        skip_landed=args.skip_landed,
        progress=progress,
    )
    print(f"wrote {total:,} {args.dataset} rows under {landing}/{args.dataset} in {time.monotonic() - started:.1f}s")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from mltrain_assets.cli import demo, demo_backfill
    from mltrain_assets.cli.checks import check_demo
    from mltrain_assets.core.pipeline import load_pipeline

    date = check_demo(args, args.pipeline or _all_pipeline_names())  # before anything is simulated or created
    pipelines = [load_pipeline(name) for name in args.pipeline or _all_pipeline_names()]
    dates = demo_backfill.demo_dates(args.days, date, pipelines)  # --days: before anything is simulated
    env = _effective_env()
    demo.init_pools(demo.ensure_instance())
    demo.ensure_tracking_store()
    started = time.monotonic()
    span = f"{dates[0]}..{date}" if len(dates) > 1 else date
    print(f"mltrain demo for {span}; state in {env['MLTRAIN_HOME']}", flush=True)
    with _cluster_spark_for_k8s_local(env, started):
        if len(dates) > 1:  # as a user would from the UI: asset backfills run by a daemon
            volumes = {x.dataset: getattr(args, f"volume_{x.dataset}", None) for p in pipelines for x in p.landings}
            outcomes = demo_backfill.run_backfill_demo(pipelines, dates, volumes=volumes, started=started)
        else:
            outcomes = _run_demo_pipelines(pipelines, date, env, args, started)
    demo._say(f"model_quality_report for {date}", started)
    outcomes.append(demo.execute("model_quality_report_job", "model_quality_report", partition_key=date))
    failed = [o for o in outcomes if not o.success]
    print()
    for pipeline in pipelines:
        if pipeline.summary:
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
    from mltrain_assets.simulate import simulate_landings

    outcomes = []
    for pipeline in pipelines:
        volumes = {x.dataset: getattr(args, f"volume_{x.dataset}", None) for x in pipeline.landings}
        simulate_landings(
            pipeline, date, date, env["MLTRAIN_LANDING_URI"], volumes, lambda say: demo._say(say, started)
        )
        outcomes += demo.run_pipeline(pipeline, date, parallel=args.parallel, started=started)
    return outcomes


@contextlib.contextmanager
def _cluster_spark_for_k8s_local(env: dict, started: float):
    """Spark for the demo: a standalone master + worker on 127.0.0.1 in k8s-local mode (as on a cluster), and a
    Spark Connect server in front of it (or of local[N]) with MLTRAIN_SPARK_CONNECT=local; the workloads are
    pointed at what started (MLTRAIN_SPARK_MASTER) until the demo ends, then everything stops."""
    from mltrain_assets.cli import demo

    logs = Path(env["MLTRAIN_HOME"]) / "logs" / "spark"
    master = env["MLTRAIN_SPARK_MASTER"]
    with contextlib.ExitStack() as stack:
        if os.environ.get("MLTRAIN_COMPUTE") == "k8s-local" and master.startswith("local"):
            from mltrain_assets.cli.sparkcluster import LocalSparkCluster

            master = stack.enter_context(LocalSparkCluster(logs))
            demo._say(f"k8s-local: Spark on a standalone master + worker at {master}", started)
        if os.environ.get("MLTRAIN_SPARK_CONNECT") == "local":
            from mltrain_assets.cli.sparkconnect import LocalSparkConnectServer

            server = LocalSparkConnectServer(logs, master=master)
            master = stack.enter_context(server)
            demo._say(f"Spark Connect server at {master} (its log: {server.log_path})", started)
        os.environ["MLTRAIN_SPARK_MASTER"] = master
        try:
            yield
        finally:
            os.environ["MLTRAIN_SPARK_MASTER"] = env["MLTRAIN_SPARK_MASTER"]


def _all_pipeline_names() -> list[str]:
    from mltrain_assets.registry import pipeline_names

    return pipeline_names()


def _cmd_summary(args: argparse.Namespace) -> int:
    from mltrain_assets.cli.demo import latest_complete_day
    from mltrain_assets.cli.errors import check_partition_date
    from mltrain_assets.core.pipeline import all_pipelines

    date = check_partition_date(args.date) if args.date else latest_complete_day()
    env = _effective_env()
    if args.as_json:
        print(json.dumps(_served(all_pipelines(), env["MLFLOW_TRACKING_URI"], date), indent=2, sort_keys=True))
        return 0
    print("\n\n".join(pipeline.summary(date) for pipeline in all_pipelines() if pipeline.summary))
    return 0


def _served(pipelines, tracking_uri: str, date: str) -> dict:
    """Per pipeline, each model's `staging` version and what its tags say (``mltrain summary --json``)."""
    from mltrain_assets.core.promotion import STAGING_ALIAS
    from mltrain_assets.resources.tracking import ModelRegistry

    registry = ModelRegistry(tracking_uri=tracking_uri)
    served: dict = {"date": date, "pipelines": {}}
    for pipeline in pipelines:
        quality = pipeline.quality
        if quality is None:
            continue
        models = []
        for key in pipeline.keys() if pipeline.keys and pipeline.keyed_assets else [""]:
            name = quality.model_name(key)
            version = registry.alias_version(name, STAGING_ALIAS)
            tags = registry.version_tags(name, version) if version else {}
            metric = tags.get(f"mltrain.metric.{quality.metric}")
            models.append(
                {
                    "model": name,
                    "key": key,
                    "staging_version": version,
                    quality.metric: float(metric) if metric else None,
                    "partition": tags.get("mltrain.partition"),
                    "code_commit": tags.get("mltrain.code_commit"),
                }
            )
        served["pipelines"][pipeline.name] = {
            "metric": quality.metric,
            "threshold": quality.threshold,
            "models": models,
        }
    return served


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
    from mltrain_assets.cli.checks import check_port_free
    from mltrain_assets.cli.devstack import DevStack

    check_port_free(args.port, "--port")
    check_port_free(args.mlflow_port, "--mlflow-port")
    if args.port == args.mlflow_port:
        raise UsageError(f"--port and --mlflow-port are both {args.port}: expected two different ports")
    env = _effective_env()
    stack = DevStack(dagster_port=args.port, mlflow_port=args.mlflow_port).start()
    print(f"Dagster UI  {stack.dagster_url}   (webserver + daemon: sensors, schedules, automation, backfills)")
    print(f"MLflow UI   {stack.mlflow_url}   (store {env['MLFLOW_TRACKING_URI']})")
    if stack.spark_url:
        print(f"Spark       {stack.spark_url}   (Spark Connect server; every Spark step is its client)")
    print(f"state in {env['MLTRAIN_HOME']}; logs in {env['MLTRAIN_HOME']}/logs; Ctrl-C stops everything", flush=True)
    try:
        while all(s.started.poll() is None for s in stack.services):
            time.sleep(1)
        print("a service exited; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


def _cmd_backfill(args: argparse.Namespace) -> int:
    from mltrain_assets.cli.backfill import launch_backfill, wait_for_backfill
    from mltrain_assets.cli.checks import check_backfill

    pipelines = args.pipeline or _all_pipeline_names()
    keys = check_backfill(args, pipelines)  # before anything is launched
    status = 0
    for pipeline in pipelines:
        try:
            backfill_id = launch_backfill(args.url, pipeline, args.start, args.end, keys)
        except RuntimeError as refused:  # the webserver's own answer (another code location, an invalid subset)
            raise SystemExit(f"mltrain backfill: {refused}") from None
        print(
            f"launched {pipeline} backfill {backfill_id} for {args.start}..{args.end}: {args.url}/runs/b/{backfill_id}"
        )
        if args.wait:
            try:
                result = wait_for_backfill(args.url, backfill_id, timeout_s=args.timeout)
            except TimeoutError as late:
                raise SystemExit(f"mltrain backfill: {late}") from None
            status |= result["status"] not in ("COMPLETED", "COMPLETED_SUCCESS")
    return status


def _cmd_materialize(args: argparse.Namespace) -> int:
    from mltrain_assets.cli.checks import check_materialize
    from mltrain_assets.cli.materialize import materialize, print_outcome
    from mltrain_assets.cli.run_config import load_run_config

    _effective_env()
    assets, span = check_materialize(args)  # before the instance is touched
    run_config = load_run_config(args.config, assets) if args.config else None
    try:
        outcome = materialize(assets, partition=args.partition, partition_range=span, run_config=run_config)
    except ValueError as refused:  # what only the selection can say (assets that share no partitions definition)
        raise UsageError(str(refused)) from None
    print_outcome(outcome)
    return 0 if outcome.success else 1


def _cmd_heal(args: argparse.Namespace) -> int:
    from mltrain_assets.cli.demo import ensure_instance
    from mltrain_assets.instance.heal import heal
    from mltrain_assets.instance.reap import backends_from_settings, reap

    _effective_env()
    instance = ensure_instance()
    report = heal(instance, dry_run=args.dry_run)
    for line in report.lines():
        print(line)
    if not report.lines():
        print("no runs in progress and no pool slots held")
    # Then the workload objects (pods, jobs, services; k8s-local's processes) of runs that ended, those just failed too.
    backends, problems = backends_from_settings()
    reaped = reap(instance, backends, dry_run=args.dry_run, say=print)
    for problem in problems:
        print(problem)
    verb = "would fail" if args.dry_run else "failed"
    print(
        f"{verb} {len(report.failed)} run(s) whose run worker is gone; "
        f"{'would free' if args.dry_run else 'freed'} the pool slots of {len(report.freed)} run(s); "
        f"{len(report.running)} running, {len(report.unknown)} left to the daemon's run monitoring; "
        f"{'would delete' if args.dry_run else 'deleted'} {len(reaped)} workload object(s) of ended runs"
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from mltrain_assets.cli.demo import ensure_instance, latest_complete_day
    from mltrain_assets.cli.errors import check_partition_date, check_positive
    from mltrain_assets.core.pipeline import all_pipelines
    from mltrain_assets.core.report import write_report
    from mltrain_assets.pipelines.reporting.collect import collect_report
    from mltrain_assets.resources.tracking import ModelRegistry

    date = check_partition_date(args.date) if args.date else latest_complete_day()
    check_positive(args.history_days, "--history-days")
    check_positive(args.grace_hours, "--grace-hours", minimum=0)
    env = _effective_env()
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
    print(json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str) if args.as_json else markdown)
    print(f"wrote {markdown_path} and {png_path}", file=sys.stderr)
    return 0


def _cmd_manifests(args: argparse.Namespace) -> int:
    from mltrain_assets.cli import manifests
    from mltrain_assets.cli.checks import check_assets, check_partition

    _effective_env()
    check_assets([args.asset])
    if args.partition is not None:
        check_partition([args.asset], args.partition)
    return manifests.main(args.asset, args.partition)
