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

from dagster import AssetKey, DagsterInstance, execute_job, reconstructable
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from mltrain_assets.partitions import city_partition_key, configured_cities
from mltrain_assets.settings import apply_defaults

REPO_ROOT = Path(__file__).resolve().parents[1]
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


def latest_complete_day() -> str:
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()


def _job(name: str):
    from mltrain_assets.definitions import defs

    return defs.resolve_job_def(name)


# Module-level job factories: ``reconstructable`` needs importable names.
def ride_events_job():
    return _job("ride_events_job")


def demand_features_job():
    return _job("demand_features_job")


def demand_city_model_job():
    return _job("demand_city_model_job")


def user_interactions_job():
    return _job("user_interactions_job")


def recommender_job():
    return _job("recommender_job")


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
    job_fn,
    label: str,
    *,
    partition_key=None,
    partition_range: tuple[str, str] | None = None,
    assets: list[str] | None = None,
) -> RunOutcome:
    instance = ensure_instance()
    tags = {"mltrain/launched_by": "demo"}
    if partition_key is not None:
        tags.update(job_fn().get_tags_for_partition_key(str(partition_key), selected_asset_keys=None))
    if partition_range:
        tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG] = partition_range
    started = time.monotonic()
    result = execute_job(
        reconstructable(job_fn),
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


def _run_city(date: str, city: str) -> RunOutcome:
    return execute(demand_city_model_job, f"{city}", partition_key=city_partition_key(date, city))


def _say(message: str, started: float) -> None:
    print(f"[demo +{time.monotonic() - started:6.1f}s] {message}", flush=True)


def run_demand_pipeline(date: str, *, cities=None, parallel: int = 2, started: float | None = None) -> list[RunOutcome]:
    """ride_events (window) -> features -> per-city model/registration/forecast runs, two at a time."""
    from mltrain_assets.workloads.demand_config import INPUT_DAYS

    started = started or time.monotonic()
    cities = cities or configured_cities()
    first = (dt.date.fromisoformat(date) - dt.timedelta(days=INPUT_DAYS - 1)).isoformat()
    outcomes = []
    _say(f"ride_events {first}..{date} (one run over {INPUT_DAYS} days)", started)
    outcomes.append(execute(ride_events_job, "ride_events", partition_range=(first, date)))
    _report(outcomes[-1], started)
    if not outcomes[-1].success:
        return outcomes
    _say(f"city_demand_features {date} (Spark)", started)
    outcomes.append(execute(demand_features_job, "city_demand_features", partition_key=date))
    _report(outcomes[-1], started)
    if not outcomes[-1].success:
        return outcomes
    _say(
        f"city_demand_model -> registered_demand_model -> demand_forecasts for {len(cities)} cities, {parallel} at a time",
        started,
    )
    with ProcessPoolExecutor(max_workers=parallel) as pool:
        futures = [pool.submit(_run_city, date, city) for city in cities]
        for future in futures:
            outcomes.append(future.result())
            _report(outcomes[-1], started)
    return outcomes


def run_recsys_pipeline(date: str, *, started: float | None = None) -> list[RunOutcome]:
    """user_interactions (window + held-out day) -> embeddings -> DDP training -> gate -> promotion -> top-K."""
    from mltrain_assets.workloads.recsys_config import EMBEDDING_WINDOW_DAYS

    started = started or time.monotonic()
    first = (dt.date.fromisoformat(date) - dt.timedelta(days=EMBEDDING_WINDOW_DAYS)).isoformat()
    _say(f"user_interactions {first}..{date} (one run)", started)
    outcomes = [execute(user_interactions_job, "user_interactions", partition_range=(first, date))]
    _report(outcomes[-1], started)
    if outcomes[-1].success:
        _say(
            f"interaction_embeddings -> recommender_model -> registered_recommender -> recommendations for {date}",
            started,
        )
        outcomes.append(execute(recommender_job, "recommender", partition_key=date))
        _report(outcomes[-1], started)
    return outcomes


def _report(outcome: RunOutcome, started: float) -> None:
    status = "ok" if outcome.success else "FAILED"
    figures = []
    for asset_key, metadata in outcome.materializations.items():
        if asset_key == "city_demand_model":
            figures.append(f"MAPE {float(metadata['mape']):.3f} (naive {float(metadata.get('naive_mape', 'nan')):.3f})")
        if asset_key == "recommender_model":
            figures.append(f"AUC {float(metadata['auc']):.3f}")
        if asset_key == "interaction_embeddings":
            figures.append(f"ALS {metadata.get('users')} users x {metadata.get('items')} items")
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
