"""Run the pipelines for one date through a real Dagster instance (``make demo``).

Each step is a real Dagster run recorded in ``$DAGSTER_HOME``, so ``make dev`` shows
everything the demo did. City models run as separate runs, two at a time.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import AssetKey, DagsterInstance, MultiPartitionKey, execute_job
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from mltrain_assets.core.pipeline import Pipeline
from mltrain_assets.settings import apply_defaults

REPO_ROOT = Path(__file__).resolve().parents[2]
# The demo prints its own progress; Dagster's event stream stays in the instance (and the UI).
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def ensure_instance() -> DagsterInstance:
    """``$DAGSTER_HOME`` with the instance profile (``MLTRAIN_DAGSTER_YAML``, default ``dagster.yaml``)."""
    env = apply_defaults()
    home = Path(env["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    template = REPO_ROOT / os.environ.get("MLTRAIN_DAGSTER_YAML", "dagster.yaml")
    target = home / "dagster.yaml"
    if template.exists() and (not target.exists() or target.read_text() != template.read_text()):
        shutil.copyfile(template, target)
    return DagsterInstance.get()


def ensure_tracking_store() -> None:
    """Create (and migrate) a local MLflow store once, before parallel runs race to do it."""
    from mlflow.tracking import MlflowClient

    MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).search_experiments(max_results=1)


def latest_complete_day() -> str:
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()


def job_named(name: str):
    """A job of the code location by name."""
    from mltrain_assets.definitions import defs

    return defs.resolve_job_def(name)


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


def execute(
    job_name: str,
    label: str,
    *,
    partition_key=None,
    partition_range: tuple[str, str] | None = None,
    assets: list[str] | None = None,
) -> RunOutcome:
    instance = ensure_instance()
    tags = {"mltrain/launched_by": "demo"}
    if partition_key is not None:
        tags.update(job_named(job_name).get_tags_for_partition_key(str(partition_key), selected_asset_keys=None))
    if partition_range:
        tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG] = partition_range
    started = time.monotonic()
    result = execute_job(
        ReconstructableRepository.for_module(
            "mltrain_assets.definitions", "defs", working_directory=str(REPO_ROOT)
        ).get_reconstructable_job(job_name),
        instance=instance,
        run_config=QUIET_CONSOLE,
        tags=tags,
        raise_on_error=False,
        asset_selection=[AssetKey(name) for name in assets] if assets else None,
    )
    outcome = RunOutcome(label, result.run_id, result.success, time.monotonic() - started)
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        outcome.materializations[materialization.asset_key.to_user_string()] = {
            k: getattr(v, "value", v) for k, v in materialization.metadata.items()
        }
    for evaluation in result.get_asset_check_evaluations():
        outcome.checks[f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"] = evaluation.passed
    if not result.success:
        failures = [e for e in result.all_events if e.is_step_failure]
        outcome.error = "; ".join(str(e.step_failure_data.error.message).strip() for e in failures)[:2000]
    return outcome


def _say(message: str, started: float) -> None:
    print(f"[demo +{time.monotonic() - started:6.1f}s] {message}", flush=True)


def run_pipeline(pipeline: Pipeline, date: str, *, parallel: int = 2, started: float | None = None) -> list[RunOutcome]:
    """Ingest the landing window in one run, then each stage for the date (per key: ``parallel`` at a time)."""
    started = started or time.monotonic()
    dates = pipeline.landing_window.dates(date)
    _say(f"{pipeline.ingestion_asset} {dates[0]}..{dates[-1]} (one run over {len(dates)} days)", started)
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
    status = "ok" if outcome.success else "FAILED"
    figures = []
    shown = set()
    for metadata in outcome.materializations.values():
        for name in pipeline.report_metrics:
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


def data_plane_work(outcomes: list[RunOutcome]) -> int:
    """How many versions were built now (0 when everything was already committed)."""
    work = 0
    for outcome in outcomes:
        for metadata in outcome.materializations.values():
            if "dates_ingested_now" in metadata:
                work += int(metadata["dates_ingested_now"])
            elif metadata.get("reused_committed_version") is False:
                work += 1
    return work


def new_registrations(outcomes: list[RunOutcome]) -> int:
    return sum(1 for o in outcomes for m in o.materializations.values() if m.get("registered_now") is True)
