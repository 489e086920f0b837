"""Run the pipelines for one date through a real Dagster instance (``make demo``).

Each step is a real Dagster run recorded in ``$DAGSTER_HOME``, so ``make dev`` shows
everything the demo did. City models run as separate runs, two at a time.

Runs are created the way the webserver and the daemon create them: with the origin of the
code location ``workspace.yaml`` declares (``mltrain_assets``), so the UI lists them under
that location (Overview timeline, filters) and can re-execute them. They execute in this
process (``execute_run``), as ``dagster asset materialize`` does, so no daemon is needed.
``mltrain materialize`` launches any asset selection the same way (``cli/materialize.py``); ``mltrain demo
--days N`` runs backfills through a daemon (``cli/demo_backfill.py``).
The Dagster internals this takes (no public API creates a run with a location's origin) are
imported from ``instance/dagster_private.py``, which says why for each.

Without a daemon nobody else notices a run whose process was killed: before each launch,
``instance.heal`` fails this host's runs whose run worker is gone and frees the pool slots they held
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
    DagsterInstance,
    JobExecutionResult,
    MultiPartitionKey,
)

from mltrain_assets.core.partitions import require_partitions_from
from mltrain_assets.core.pipeline import Pipeline
from mltrain_assets.instance.dagster_private import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    ReconstructableRepository,
    execute_run,
)
from mltrain_assets.instance.heal import heal, worker_tag
from mltrain_assets.instance.origin import (  # the location's origin, which the instance class gives runs too
    DEFINITIONS_MODULE,
    REPO_ROOT,
    remote_job_origin,
)
from mltrain_assets.instance.origin import code_location_origin as code_location_origin  # what runs record
from mltrain_assets.settings import apply_defaults

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
    exclusive (``instance/slot_claims.py``), then the pool limits written (``instance/pools.py``)."""
    from mltrain_assets.definitions import defs
    from mltrain_assets.instance.pools import apply_pool_limits, declared_pools
    from mltrain_assets.instance.slot_claims import guard_slot_claims

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
    (``instance.heal``); the new run records this process as its worker (``mltrain/run_worker``).
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

    def add_materialization(self, materialization: Any) -> None:
        """An ``AssetMaterialization``: its metadata's values under the asset's name."""
        self.materializations[materialization.asset_key.to_user_string()] = {
            k: getattr(v, "value", v) for k, v in materialization.metadata.items()
        }

    def add_check(self, evaluation: Any) -> None:
        """An ``AssetCheckEvaluation``: a range run has one per partition, and a check passes if all did."""
        name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        self.checks[name] = self.checks.get(name, True) and evaluation.passed
        said = [self.check_descriptions.get(name, ""), evaluation.description or ""]
        self.check_descriptions[name] = "; ".join(text for text in said if text)


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
        outcome.add_materialization(event.step_materialization_data.materialization)
    for evaluation in result.get_asset_check_evaluations():
        outcome.add_check(evaluation)
    if not result.success:
        failures = [e for e in result.all_events if e.is_step_failure]
        errors = [e.step_failure_data.error for e in failures]
        outcome.error = "; ".join(str(error.message if error else "").strip() for error in errors)[:2000]
    return outcome


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
    outcomes = []
    for landing in pipeline.landings:  # one run per landing dataset over the days the date needs of it
        days = landing.window.dates(date)
        per_day = " + ".join((landing.asset, *landing.day_assets))
        _say(f"{per_day} {days[0]}..{days[-1]} (one run over {len(days)} days)", started)
        outcomes.append(execute(landing.job, landing.asset, partition_range=(days[0], days[-1])))
        report_run(pipeline, outcomes[-1], started)
        if not outcomes[-1].success:
            break
    for stage in pipeline.stages:
        if not outcomes[-1].success:
            break
        if not stage.per_key:
            _say(f"{stage.label} for {date}", started)
            outcomes.append(execute(stage.job, stage.label, partition_key=date))
            report_run(pipeline, outcomes[-1], started)
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
                report_run(pipeline, outcomes[-1], started)
    return outcomes


def report_run(pipeline: Pipeline, outcome: RunOutcome, started: float) -> None:
    report_metrics(pipeline.report_metrics, outcome, started)


def report_metrics(metrics, outcome: RunOutcome, started: float) -> None:
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
