"""Run the pipelines for one date through a real Dagster instance (``make demo``).

Each step is a real Dagster run recorded in ``$DAGSTER_HOME``, so ``make dev`` shows
everything the demo did. City models run as separate runs, two at a time.

Runs are created the way the webserver and the daemon create them: with the origin of the
code location ``workspace.yaml`` declares (``mltrain_assets``), so the UI lists them under
that location (Overview timeline, filters) and can re-execute them. They execute in this
process (``execute_run``), as ``dagster asset materialize`` does, so no daemon is needed.
``mltrain materialize`` launches any asset selection the same way.
The Dagster internals this takes (no public API creates a run with a location's origin) are
imported from ``core/dagster_private.py``, which says why for each.

Without a daemon nobody else notices a run whose process was killed: before each launch,
``core.heal`` fails this host's runs whose run worker is gone and frees the pool slots they held
(each run created here names its worker in the ``mltrain/run_worker`` tag), so a killed run never
blocks the next one on a pool.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import (
    AssetKey,
    AssetSelection,
    BackfillPolicy,
    DagsterInstance,
    DagsterInvalidSubsetError,
    DagsterUnknownPartitionError,
    JobExecutionResult,
    MultiPartitionKey,
    partition_loading_context,
)

from mltrain_assets.core.dagster_private import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    CodeLocationOrigin,
    LoadableTargetOrigin,
    ManagedGrpcPythonEnvCodeLocationOrigin,
    ReconstructableRepository,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
    WorkspaceFileTarget,
    execute_run,
)
from mltrain_assets.core.heal import heal, worker_tag
from mltrain_assets.core.partitions import PARTITIONS_START_DATE, PARTITIONS_START_ENV, require_partitions_from
from mltrain_assets.core.pipeline import Pipeline
from mltrain_assets.settings import apply_defaults

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKSPACE_FILE = REPO_ROOT / "workspace.yaml"
# The code location the webserver and the daemon load (workspace.yaml, [tool.dagster] in pyproject.toml).
LOCATION_NAME = "mltrain_assets"
DEFINITIONS_MODULE = "mltrain_assets.definitions"
# The demo prints its own progress; Dagster's event stream stays in the instance (and the UI).
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def ensure_instance() -> DagsterInstance:
    """``$DAGSTER_HOME`` with the instance profile (``MLTRAIN_DAGSTER_YAML``, default ``dagster.yaml``)."""
    env = apply_defaults()
    home = Path(env["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    template = REPO_ROOT / os.environ.get("MLTRAIN_DAGSTER_YAML", "dagster.yaml")
    if template.exists():
        from mltrain_assets.cli.profile import install_profile

        install_profile(template, home)  # created, or completed: an edited profile is the user's
    return DagsterInstance.get()


def init_pools(instance: DagsterInstance) -> list:
    """The one explicit step that prepares the pools before any run is launched: each slot claim made
    exclusive (``core/slot_claims.py``), then the pool limits written (``core/pools.py``)."""
    from mltrain_assets.core.pools import apply_pool_limits, declared_pools
    from mltrain_assets.core.slot_claims import guard_slot_claims
    from mltrain_assets.definitions import defs

    return [guard_slot_claims(instance), *apply_pool_limits(instance, declared_pools(defs))]


def ensure_tracking_store() -> None:
    """Create (and migrate) a local MLflow store once, before parallel runs race to do it."""
    from mlflow.tracking import MlflowClient

    MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).search_experiments(max_results=1)


def latest_complete_day() -> str:
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()


def job_named(name: str):
    """A job of the code location by name."""
    return importlib.import_module(DEFINITIONS_MODULE).defs.resolve_job_def(name)


def code_location_origin() -> CodeLocationOrigin:
    """The origin of the ``mltrain_assets`` location exactly as ``workspace.yaml`` declares it.

    Parsing the file loads nothing (no code server starts). Without the file (an installed
    package), the same module-based location is described directly.
    """
    if WORKSPACE_FILE.exists():
        for origin in WorkspaceFileTarget(paths=[str(WORKSPACE_FILE)]).create_origins():
            if origin.location_name == LOCATION_NAME:
                return origin
    return ManagedGrpcPythonEnvCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(module_name=DEFINITIONS_MODULE), location_name=LOCATION_NAME
    )


def remote_job_origin(job_name: str, repository_name: str | None = None) -> RemoteJobOrigin:
    """Where the UI finds this job: the code location's (only) repository, by default the one ``defs`` makes."""
    if repository_name is None:
        repository_name = importlib.import_module(DEFINITIONS_MODULE).defs.get_repository_def().name
    return RemoteJobOrigin(RemoteRepositoryOrigin(code_location_origin(), repository_name), job_name)


def _reconstructable_job(job_name: str):
    repository = ReconstructableRepository.for_module(DEFINITIONS_MODULE, "defs", working_directory=str(REPO_ROOT))
    return repository.get_reconstructable_job(job_name)


def execute_with_location_origin(
    job_name: str,
    instance: DagsterInstance,
    *,
    run_config: dict | None = None,
    tags: dict[str, str] | None = None,
    asset_selection: list[AssetKey] | None = None,
) -> JobExecutionResult:
    """Create the run with the code location's origin (as a launch from the UI or the daemon does), execute it here.

    ``execute_job`` would record only the Python origin, and the UI would call the run "from a
    different code location": no re-execution, no place on the Overview timeline.

    First, runs of this instance whose run worker died are failed and their pool slots freed
    (``core.heal``); the new run records this process as its worker (``mltrain/run_worker``).
    """
    launched_by = (tags or {}).get("mltrain/launched_by", "mltrain")
    heal(
        instance, by=f"the pre-launch check of {launched_by}", say=lambda line: print(f"heal: {line}", file=sys.stderr)
    )
    recon_job = _reconstructable_job(job_name)
    repository = recon_job.repository.get_definition()
    recon_job = recon_job.with_repository_load_data(repository.repository_load_data)
    job_def = recon_job.get_definition()
    run_id = str(uuid.uuid4())  # what Dagster's run ids are (make_new_run_id)
    run = instance.create_run_for_job(
        job_def=job_def,
        run_id=run_id,
        run_config=run_config or {},
        tags={**job_def.run_tags, **(tags or {}), **worker_tag(run_id)},
        asset_selection=frozenset(asset_selection) if asset_selection else None,
        remote_job_origin=remote_job_origin(job_name, repository.name),
        job_code_origin=recon_job.get_python_origin(),
        repository_load_data=repository.repository_load_data,
    )
    return execute_run(recon_job, run, instance, raise_on_error=False)


@dataclass
class RunOutcome:
    """What one run did, in the terms a person checks: success, work done, registrations."""

    label: str
    run_id: str
    success: bool
    seconds: float
    materializations: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    error: str = ""
    check_descriptions: dict[str, str] = field(default_factory=dict)


def execute(
    job_name: str,
    label: str,
    *,
    partition_key=None,
    partition_range: tuple[str, str] | None = None,
    assets: list[str] | None = None,
    launched_by: str = "demo",
    run_config: dict | None = None,
) -> RunOutcome:
    instance = ensure_instance()
    tags = {"mltrain/launched_by": launched_by}
    selection = [AssetKey.from_user_string(name) for name in assets] if assets else None
    if partition_key is not None:
        tags.update(job_named(job_name).get_tags_for_partition_key(str(partition_key), selected_asset_keys=selection))
    if partition_range:
        tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG] = partition_range
    started = time.monotonic()
    result = execute_with_location_origin(
        job_name,
        instance,
        run_config={**QUIET_CONSOLE, **(run_config or {})},
        tags=tags,
        asset_selection=selection,
    )
    outcome = RunOutcome(label, result.run_id, result.success, time.monotonic() - started)
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        outcome.materializations[materialization.asset_key.to_user_string()] = {
            k: getattr(v, "value", v) for k, v in materialization.metadata.items()
        }
    for evaluation in result.get_asset_check_evaluations():
        # A range run has one evaluation per partition (``evaluation.partition``): a check passes if all did.
        name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        outcome.checks[name] = outcome.checks.get(name, True) and evaluation.passed
        said = [outcome.check_descriptions.get(name, ""), evaluation.description or ""]
        outcome.check_descriptions[name] = "; ".join(text for text in said if text)
    if not result.success:
        failures = [e for e in result.all_events if e.is_step_failure]
        errors = [e.step_failure_data.error for e in failures]
        outcome.error = "; ".join(str(error.message if error else "").strip() for error in errors)[:2000]
    return outcome


def materialize(
    assets: list[str], *, partition: str | None = None, partition_range: tuple[str, str] | None = None
) -> RunOutcome:
    """Materialize an asset selection for one partition (or a range, one run) with the code location's origin.

    What ``mltrain materialize`` runs: like ``dagster asset materialize`` (Dagster's own API, the
    same implicit asset job, executed in this process), but needing no ``-m`` in the project
    folder and recording the run under the ``mltrain_assets`` location, so the UI can re-execute it.
    """
    from mltrain_assets.definitions import defs

    repository = defs.get_repository_def()
    try:
        keys = AssetSelection.from_coercible(assets).resolve(repository.asset_graph)
    except DagsterInvalidSubsetError:
        known = sorted(key.to_user_string() for key in repository.asset_graph.get_all_asset_keys())
        raise ValueError(f"unknown asset in {', '.join(assets)}; the assets are: {', '.join(known)}") from None
    job = repository.get_implicit_job_def_for_assets(keys)
    if job is None:
        raise ValueError(f"{', '.join(assets)}: the selected assets do not share one partitions definition")
    names = sorted(key.to_user_string() for key in keys)
    partitioned = [name for name in names if repository.asset_graph.get(AssetKey.from_user_string(name)).partitions_def]
    if partitioned and not (partition or partition_range):
        raise ValueError(f"{', '.join(partitioned)} are partitioned: give --partition or --partition-range")
    if not partitioned and (partition or partition_range):
        raise ValueError(f"{', '.join(names)} have no partitions: drop --partition/--partition-range")
    if partition_range:
        not_single_run = [
            name
            for name in names
            if repository.asset_graph.get(AssetKey.from_user_string(name)).backfill_policy
            != BackfillPolicy.single_run()
        ]
        if not_single_run:
            raise ValueError(
                f"{', '.join(not_single_run)} cannot run a partition range in one run (no single-run backfill "
                "policy): use `mltrain backfill` or one --partition at a time"
            )
    instance = ensure_instance()
    init_pools(instance)
    with partition_loading_context(dynamic_partitions_store=instance) as context:
        for key in [partition] if partition else list(partition_range or ()):
            try:
                job.validate_partition_key(key, selected_asset_keys=keys, context=context)
            except DagsterUnknownPartitionError:
                partitions_def = repository.asset_graph.get(AssetKey.from_user_string(partitioned[0])).partitions_def
                assert partitions_def is not None  # one of the partitioned assets
                raise ValueError(
                    f"{key} is not a partition of {', '.join(names)} (the latest is "
                    f"{partitions_def.get_last_partition_key()}; days run from {PARTITIONS_START_DATE} "
                    f"($MLTRAIN_PARTITIONS_START) to yesterday, UTC)"
                ) from None
    label = f"{','.join(names)} {partition or '...'.join(partition_range or ())}".strip()
    return execute(
        job.name,
        label,
        partition_key=partition,
        partition_range=partition_range,
        assets=names,
        launched_by="mltrain materialize",
    )


def print_outcome(outcome: RunOutcome) -> None:
    """What ``mltrain materialize`` prints: the run, each asset's figures, each check's verdict."""
    ui = os.environ.get("MLTRAIN_DAGSTER_UI_URL", "http://127.0.0.1:3000").rstrip("/")
    status = "ok" if outcome.success else "FAILED"
    print(f"{outcome.label}: {status} in {outcome.seconds:.1f}s; run {outcome.run_id} ({ui}/runs/{outcome.run_id})")
    for asset, metadata in outcome.materializations.items():
        shown = {k: metadata[k] for k in ("partition", "rows", "version", "reused_committed_version") if k in metadata}
        print(f"  {asset}: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    for name, passed in outcome.checks.items():
        print(f"  check {name}: {'passed' if passed else 'FAILED'}: {outcome.check_descriptions.get(name, '')}")
    if outcome.error:
        print(f"  error: {outcome.error}")


def _say(message: str, started: float) -> None:
    print(f"[demo +{time.monotonic() - started:6.1f}s] {message}", flush=True)


def run_pipeline(pipeline: Pipeline, date: str, *, parallel: int = 2, started: float | None = None) -> list[RunOutcome]:
    """Ingest the landing window in one run, then each stage for the date (per key: ``parallel`` at a time)."""
    started = started or time.monotonic()
    dates = pipeline.landing_window.dates(date)
    try:
        require_partitions_from(dates[0], f"the {pipeline.name} pipeline for {date} ({pipeline.ingestion_asset})")
    except ValueError as refused:
        raise SystemExit(f"mltrain demo: {refused}") from None
    per_day = " + ".join((pipeline.ingestion_asset, *pipeline.landing_day_assets))
    _say(f"{per_day} {dates[0]}..{dates[-1]} (one run over {len(dates)} days)", started)
    outcomes = [execute(pipeline.ingestion_job, pipeline.ingestion_asset, partition_range=(dates[0], dates[-1]))]
    _report(pipeline, outcomes[-1], started)
    for stage in pipeline.stages:
        if not outcomes[-1].success:
            break
        if not stage.per_key:
            _say(f"{stage.label} for {date}", started)
            outcomes.append(execute(stage.job, stage.label, partition_key=date))
            _report(pipeline, outcomes[-1], started)
            continue
        assert pipeline.keys is not None  # a per-key stage's assets have a key dimension (core/pipeline.py)
        keys = pipeline.keys()
        _say(f"{stage.label} for {len(keys)} {pipeline.key_dimension} partitions, {parallel} at a time", started)
        with ProcessPoolExecutor(max_workers=parallel) as pool:
            futures = [
                pool.submit(
                    execute,
                    stage.job,
                    key,
                    partition_key=MultiPartitionKey({"date": date, pipeline.key_dimension: key}),
                )
                for key in keys
            ]
            for future in futures:
                outcomes.append(future.result())
                _report(pipeline, outcomes[-1], started)
    return outcomes


def _report(pipeline: Pipeline, outcome: RunOutcome, started: float) -> None:
    _report_metrics(pipeline.report_metrics, outcome, started)


def _report_metrics(metrics, outcome: RunOutcome, started: float) -> None:
    """One line per run: status, time, the ``metrics`` its materializations carry, registrations, failed gates."""
    status = "ok" if outcome.success else "FAILED"
    figures = []
    shown = set()
    for metadata in outcome.materializations.values():
        for name in metrics:
            value = metadata.get(name)
            if value is not None and name not in shown:
                shown.add(name)
                figures.append(f"{name} {value:.3f}" if isinstance(value, float) else f"{name} {value}")
        if "model_version" in metadata:
            figures.append(
                f"v{metadata['model_version']} {'promoted' if metadata.get('promoted_to_staging') else 'not promoted'}"
            )
    failed_checks = [name for name, passed in outcome.checks.items() if not passed]
    if failed_checks:
        figures.append(f"failed gates: {failed_checks}")
    _say(
        f"  {outcome.label}: {status} in {outcome.seconds:.1f}s {' '.join(figures)} (run {outcome.run_id[:8]})", started
    )
    if outcome.error:
        _say(f"  error: {outcome.error}", started)


# What a run over a range of dates says it built (ingestion, aggregates): one count for the whole run.
RANGE_BUILT_KEYS = ("dates_ingested_now", "dates_aggregated_now")


def data_plane_work(outcomes: list[RunOutcome]) -> int:
    """How many versions were built now (0 when everything was already committed)."""
    work = 0
    for outcome in outcomes:
        for metadata in outcome.materializations.values():
            range_count = next((metadata[key] for key in RANGE_BUILT_KEYS if key in metadata), None)
            if range_count is not None:
                work += int(range_count)
            elif metadata.get("reused_committed_version") is False:
                work += 1
    return work


def new_registrations(outcomes: list[RunOutcome]) -> int:
    return sum(1 for o in outcomes for m in o.materializations.values() if m.get("registered_now") is True)


# ------------------------------------------------------------------ `mltrain demo --days N` (N > 1)

IN_PROGRESS_STATUSES = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")
# How long the demo waits, after its backfills finish, for runs automation started meanwhile (report renders).
SETTLE_TIMEOUT_S = 600
HEARTBEAT_S = 60  # a progress line at least this often while runs are queued or running
# Nothing queued or running for this long after the backfills: automation (a tick every 10 s) has nothing to add.
QUIET_S = 30


def demo_dates(days: int, last: str, pipelines: list[Pipeline]) -> list[str]:
    """The ``days`` dates ending at ``last``, oldest first; a ``UsageError`` before any work when they cannot run.

    Every date must be a partition (yesterday, UTC, at the latest) and every pipeline's landing window of the
    first date must start on or after the first partition (``MLTRAIN_PARTITIONS_START``).
    """
    from mltrain_assets.cli.errors import UsageError, latest_partition, partitions_start
    from mltrain_assets.workloads.common.dates import shift

    if days < 1:
        raise UsageError(f"--days {days}: expected a whole number of days >= 1")
    newest = latest_partition()
    if last > newest:
        raise UsageError(f"--date {last} is not a partition yet: expected a date up to {newest} (yesterday, UTC)")
    dates = [shift(last, -k) for k in range(days - 1, -1, -1)]
    start = partitions_start()
    for pipeline in pipelines:
        needed = pipeline.landing_window.first(dates[0])
        if needed < start:
            reach = (dt.date.fromisoformat(dates[0]) - dt.date.fromisoformat(needed)).days
            most = (dt.date.fromisoformat(last) - dt.date.fromisoformat(start)).days - reach + 1
            valid = f"--days from 1 to {most}" if most >= 1 else f"a --date from {shift(start, reach)}"
            raise UsageError(
                f"--days {days} up to {last} starts at {dates[0]}, whose {pipeline.name} inputs reach back to {needed}, "
                f"before the first partition {start} ({PARTITIONS_START_ENV}): expected {valid} "
                f"(or set {PARTITIONS_START_ENV}={needed} or earlier)"
            )
    return dates


def demo_stack():
    """``mltrain dev``'s webserver and daemon (no MLflow UI) on a free port, for the demo's backfills.

    The runs the daemon launches record the links of ``make dev``'s UIs (this process's settings), as the
    in-process demo runs do, not the address of this short-lived webserver.
    """
    from mltrain_assets.cli.devstack import DevStack

    class DemoStack(DevStack):
        def link_settings(self) -> dict[str, str]:
            return {}

    return DemoStack(dagster_port=_free_port(), mlflow_ui=False)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def land_and_ingest(pipeline: Pipeline, dates: list[str], volume: int | None, started: float) -> RunOutcome:
    """Simulate the landing window of ``dates`` (days already landed are kept), then ingest it in one run here.

    Ingested before the daemon starts, so its landing sensor adopts the days instead of starting a run per day.
    """
    from mltrain_assets.simulate import simulate

    first, last = pipeline.landing_window.first(dates[0]), dates[-1]
    landing = os.environ["MLTRAIN_LANDING_URI"]
    _say(
        f"simulating {pipeline.landing_dataset} {first}..{last} into {landing} (days already landed are kept)", started
    )
    sim = pipeline.spec.simulator
    keys: dict[str, Any] = {sim.keys_option: pipeline.keys()} if sim.keys_option and pipeline.keys else {}
    simulate(pipeline.landing_dataset, landing, first, last, volume=volume, skip_landed=True, **keys)
    per_day = " + ".join((pipeline.ingestion_asset, *pipeline.landing_day_assets))
    _say(f"{per_day} {first}..{last} (one run, here, before the daemon starts)", started)
    outcome = execute(pipeline.ingestion_job, pipeline.ingestion_asset, partition_range=(first, last))
    _report(pipeline, outcome, started)
    return outcome


def run_backfill_demo(
    pipelines: list[Pipeline], dates: list[str], *, volumes: dict[str, int | None] | None = None, started: float
) -> list[RunOutcome]:
    """``mltrain demo --days N``: each pipeline over ``dates`` as one asset backfill, run by a Dagster daemon.

    Lands and ingests each pipeline's window here, starts a webserver and a daemon on this instance, launches
    one backfill per pipeline through the webserver's GraphQL API (what the UI's backfill dialog calls), prints
    each run as it ends, waits for the runs automation started meanwhile, and stops both services.
    """
    outcomes = [land_and_ingest(p, dates, (volumes or {}).get(p.name), started) for p in pipelines]
    if not all(outcome.success for outcome in outcomes):
        return outcomes
    from mltrain_assets.cli.backfill import launch_backfill

    with demo_stack() as stack:
        _say(f"Dagster webserver + daemon at {stack.dagster_url} (logs in {os.environ['MLTRAIN_HOME']}/logs)", started)
        backfills: dict[str, Pipeline] = {}
        try:
            for pipeline in pipelines:
                backfill_id = launch_backfill(stack.dagster_url, pipeline.name, dates[0], dates[-1])
                backfills[backfill_id] = pipeline
                _say(f"{pipeline.name} backfill {backfill_id} for {dates[0]}..{dates[-1]} launched", started)
            outcomes += _follow_backfills(stack.dagster_url, backfills, started)
        except BaseException:
            # Interrupted: the next daemon on this instance (`make dev`) must not carry on with the demo's work.
            _cancel_backfills(stack.dagster_url, backfills, started)
            raise
        finally:
            _say("stopping the webserver and the daemon", started)
    return outcomes


CANCEL = """
mutation Cancel($id: String!) {
  cancelPartitionBackfill(backfillId: $id) { __typename ... on PythonError { message } }
}
"""


def _cancel_backfills(url: str, backfills: dict[str, Pipeline], started: float) -> None:
    from mltrain_assets.cli.backfill import _graphql

    for backfill_id in backfills:
        try:
            result = _graphql(url, CANCEL, {"id": backfill_id})["cancelPartitionBackfill"]
            _say(f"backfill {backfill_id}: cancel requested ({result['__typename']})", started)
        except Exception as failed:  # the webserver may be the thing that went away
            _say(f"backfill {backfill_id}: could not cancel it ({failed}): cancel it in the UI", started)


def _follow_backfills(url: str, backfills: dict[str, Pipeline], started: float, poll_s: float = 5) -> list[RunOutcome]:
    """Poll until every backfill has finished and nothing was queued or running for ``QUIET_S``; print each run."""
    from dagster import RunsFilter

    from mltrain_assets.cli.backfill import FINISHED, backfill_status

    instance = DagsterInstance.get()
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    metrics = tuple(dict.fromkeys(name for pipeline in backfills.values() for name in pipeline.report_metrics))
    reported: dict[str, RunOutcome] = {}
    statuses: dict[str, str] = {}
    settle_deadline: float | None = None
    quiet_since: float | None = None
    heartbeat = time.monotonic()
    while True:
        for backfill_id, pipeline in backfills.items():
            status = backfill_status(url, backfill_id)["status"]
            if statuses.get(backfill_id) != status:
                statuses[backfill_id] = status
                _say(f"{pipeline.name} backfill {backfill_id}: {status}", started)
        records = instance.get_run_records(RunsFilter(created_after=since))
        for record in records:
            run = record.dagster_run
            if run.run_id not in reported and run.status.value not in IN_PROGRESS_STATUSES:
                reported[run.run_id] = outcome = outcome_of_run(instance, record)
                _report_metrics(metrics, outcome, started)
        running = sum(1 for r in records if r.dagster_run.status.value in IN_PROGRESS_STATUSES)
        if time.monotonic() - heartbeat >= HEARTBEAT_S:
            heartbeat = time.monotonic()
            failed = sum(not o.success for o in reported.values())
            _say(f"{len(reported)} runs ended ({failed} failed), {running} queued or running", started)
        if all(status in FINISHED for status in statuses.values()):
            quiet_since = None if running else quiet_since or time.monotonic()
            if quiet_since and time.monotonic() - quiet_since >= QUIET_S:
                return list(reported.values())
            settle_deadline = settle_deadline or time.monotonic() + SETTLE_TIMEOUT_S
            if time.monotonic() > settle_deadline:
                _say(f"backfills finished; leaving {running} runs automation started to the next `make dev`", started)
                return list(reported.values())
        time.sleep(poll_s)


def outcome_of_run(instance: DagsterInstance, record) -> RunOutcome:
    """What one finished run did (its materializations, checks, failure), read back from the instance."""
    from dagster import DagsterEventType

    run = record.dagster_run
    assets = sorted(key.to_user_string() for key in run.asset_selection or ())
    span = [run.tags.get(tag) for tag in (ASSET_PARTITION_RANGE_START_TAG, ASSET_PARTITION_RANGE_END_TAG)]
    partition = run.tags.get("dagster/partition") or "...".join(key for key in span if key)
    label = f"{','.join(assets) or run.job_name} {partition}".strip()
    seconds = (record.end_time or time.time()) - (record.start_time or record.create_timestamp.timestamp())
    outcome = RunOutcome(label, run.run_id, run.status.value == "SUCCESS", seconds)
    errors = []
    for entry in instance.all_logs(
        run.run_id,
        of_type={
            DagsterEventType.ASSET_MATERIALIZATION,
            DagsterEventType.ASSET_CHECK_EVALUATION,
            DagsterEventType.STEP_FAILURE,
        },
    ):
        event = entry.dagster_event
        if event is None:
            continue
        if event.is_step_materialization:
            materialization = event.step_materialization_data.materialization
            outcome.materializations[materialization.asset_key.to_user_string()] = {
                k: getattr(v, "value", v) for k, v in materialization.metadata.items()
            }
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.asset_check_evaluation_data
            name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
            # As ``execute`` says it: a check passes if it passed for every partition of the run.
            outcome.checks[name] = outcome.checks.get(name, True) and evaluation.passed
            said = [outcome.check_descriptions.get(name, ""), evaluation.description or ""]
            outcome.check_descriptions[name] = "; ".join(text for text in said if text)
        elif event.is_step_failure and event.step_failure_data.error:
            errors.append(event.step_failure_data.error.message.strip())
    outcome.error = "; ".join(errors)[:2000]
    return outcome
