"""What happened, as alerts: the failed gates, promotions and failure of a run, and the freshness breaches.

Read from the Dagster instance (event log, check executions) and the code location's asset graph; each alert
names the pipeline, asset, partition, rule and observed value, with links to Dagster and MLflow. The sensors
that send them are ``core/alerts.py``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    EventLogRecord,
    EventRecordsFilter,
    RepositoryDefinition,
    RunFailureSensorContext,
)

from mltrain_assets.core.alert_delivery import FRESHNESS, GATE_FAILED, PROMOTION, RUN_FAILURE, Alert, clip, unique
from mltrain_assets.core.promotion import REPLAYED_SUFFIX, STAGING_ALIAS
from mltrain_assets.settings import DEFAULT_DAGSTER_UI_URL
from mltrain_assets.workloads.common.tracking import dagster_asset_url, dagster_run_url

if TYPE_CHECKING:
    from mltrain_assets.instance.dagster_private import SerializableErrorInfo

# Events read per sensor tick; the rest wait for the next tick (the cursor stops at the last one read).
BATCH = 200
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG, RANGE_END_TAG = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
WILL_RETRY_TAG = "dagster/will_retry"
# What Dagster raises when a blocking check fails: the step's failure is the gate's.
_CHECK_FAILED_ERROR = "DagsterAssetCheckFailedError"
# Metadata a gate result or registration carries that is not an observed value.
_NOT_A_VALUE = frozenset({"partition", "partitions", "violations"})
_MLFLOW_LINKS = ("mlflow_model_version", "mlflow_run")


def _ui() -> str:
    return os.environ.get("MLTRAIN_DAGSTER_UI_URL") or DEFAULT_DAGSTER_UI_URL


def _pipeline(repository: RepositoryDefinition | None, key: AssetKey | None) -> str:
    """The asset's ``pipeline`` tag (every step asset carries one), where the definitions know the asset."""
    if repository is None or key is None:
        return ""
    graph = repository.asset_graph
    return graph.get(key).tags.get("pipeline", "") if graph.has(key) else ""


def _run_partitions(run: DagsterRun) -> str:
    """The run's partition, or its range (``first...last``) for a run over several (a single-run backfill)."""
    first, last = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    return run.tags.get(PARTITION_TAG) or (f"{first}...{last}" if first and last else "")


def _value(metadata: Mapping[str, Any], numbers_only: bool = False) -> str:
    """Observed values: the numbers (and short texts) of a result's metadata, ``name=value`` each."""
    shown = []
    kinds: tuple[type, ...] = (int, float) if numbers_only else (int, float, str)
    for name, entry in metadata.items():
        value = getattr(entry, "value", entry)
        if name in _NOT_A_VALUE or isinstance(value, bool) or not isinstance(value, kinds):
            continue
        if isinstance(value, str) and (len(value) > 80 or "://" in value):
            continue
        shown.append(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}")
    return ", ".join(shown)


def _mlflow_link(metadata: Mapping[str, Any]) -> str:
    for name in _MLFLOW_LINKS:
        value = getattr(metadata.get(name), "value", metadata.get(name))
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            return value
    return ""


def _check_alert(
    evaluation: AssetCheckEvaluation, run: DagsterRun | None, repository: RepositoryDefinition | None
) -> Alert | None:
    if evaluation.passed or evaluation.severity != AssetCheckSeverity.ERROR:
        return None  # a WARN (e.g. a freshness check past its warn window only) is no breach
    metadata = evaluation.metadata
    own = getattr(metadata.get("partition"), "value", None)  # a gate's result names its one partition
    partition = evaluation.partition or (own if isinstance(own, str) else "") or (_run_partitions(run) if run else "")
    # Dagster's freshness checks (build_*_freshness_checks) are named for freshness.
    cause = FRESHNESS if "freshness" in evaluation.check_name else GATE_FAILED
    rule = evaluation.check_name + (f": {evaluation.description}" if evaluation.description else "")
    run_id = run.run_id if run else ""
    return Alert(
        cause=cause,
        pipeline=_pipeline(repository, evaluation.asset_key),
        asset=evaluation.asset_key.to_user_string(),
        partition=partition,
        rule=rule,
        value=_value(metadata),
        run_id=run_id,
        dagster_url=dagster_run_url(_ui(), run_id)
        if run_id
        else dagster_asset_url(_ui(), evaluation.asset_key.to_user_string(), partition),
        mlflow_url=_mlflow_link(metadata),
    )


def _promotion_alert(record: EventLogRecord, run: DagsterRun, repository: RepositoryDefinition | None) -> Alert | None:
    """A registration that moved ``staging`` now (``core.promotion``): a replayed decision moved nothing."""
    materialization = record.asset_materialization
    if materialization is None:
        return None
    metadata = {name: getattr(entry, "value", entry) for name, entry in materialization.metadata.items()}
    reason = str(metadata.get("promotion_reason", ""))
    if metadata.get("promoted_to_staging") is not True or reason.endswith(REPLAYED_SUFFIX):
        return None
    previous = metadata.get("previous_staging_version") or "none"
    version = metadata.get("model_version", "?")
    model = str(metadata.get("model", "")).removeprefix("models:/")
    value = f"{model or 'version ' + str(version)} is `{STAGING_ALIAS}` (was v{previous})".replace(
        "(was vnone)", "(first)"
    )
    # The scores it was registered with (and the comparison with the champion, where one was made).
    extra = _value({k: v for k, v in materialization.metadata.items() if k != "model_version"}, numbers_only=True)
    return Alert(
        cause=PROMOTION,
        pipeline=_pipeline(repository, materialization.asset_key),
        asset=materialization.asset_key.to_user_string(),
        partition=materialization.partition or _run_partitions(run),
        rule=reason,
        value=value + (f"; {extra}" if extra else ""),
        run_id=run.run_id,
        dagster_url=dagster_run_url(_ui(), run.run_id),
        mlflow_url=_mlflow_link(materialization.metadata),
    )


def run_alerts(instance: DagsterInstance, run: DagsterRun, repository: RepositoryDefinition | None) -> list[Alert]:
    """The failed checks and the promotions one run recorded, one per key."""
    records = instance.get_records_for_run(
        run.run_id, of_type={DagsterEventType.ASSET_CHECK_EVALUATION, DagsterEventType.ASSET_MATERIALIZATION}
    ).records
    alerts: list[Alert | None] = []
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            alerts.append(_check_alert(event.asset_check_evaluation_data, run, repository))
        else:
            alerts.append(_promotion_alert(record, run, repository))
    return unique(a for a in alerts if a is not None)


def failure_alert(
    context: RunFailureSensorContext, gate_alerts: Sequence[Alert], repository: RepositoryDefinition | None
) -> Alert | None:
    """The run's failure, or None where a failed blocking gate explains it or Dagster retries the run."""
    run = context.dagster_run
    if run.tags.get(WILL_RETRY_TAG) == "true":
        return None
    steps = context.get_step_failure_events()
    errors = [_user_error(step.step_failure_data.error) for step in steps]
    gates_failed = any(alert.cause == GATE_FAILED for alert in gate_alerts)
    if gates_failed and errors and all(e is not None and e.cls_name == _CHECK_FAILED_ERROR for e in errors):
        return None
    step_keys = [step.step_key or "" for step in steps]
    assets = _assets_of_steps(repository, step_keys)
    if errors and errors[0] is not None:
        first = errors[0]
        line = (first.message.strip().splitlines() or [""])[0]  # Dagster's message starts with the class name
        cls_name = first.cls_name or "Error"
        rule = line if line.startswith(cls_name) else f"{cls_name}: {line}"
    else:
        rule = (context.failure_event.message or "run failed").strip().splitlines()[0]
    pipelines = sorted({_pipeline(repository, key) for key in assets} - {""})
    return Alert(
        cause=RUN_FAILURE,
        pipeline=", ".join(pipelines) or run.job_name,
        asset=", ".join(key.to_user_string() for key in assets) or ", ".join(step_keys),
        partition=_run_partitions(run),
        rule=clip(rule, 500),
        value=f"{len(steps)} step(s) failed: {', '.join(step_keys)}" if steps else "the run failed outside its steps",
        run_id=run.run_id,
        dagster_url=dagster_run_url(_ui(), run.run_id),
    )


def _user_error(error: SerializableErrorInfo | None) -> SerializableErrorInfo | None:
    """The error a step's code raised: Dagster wraps it in ``DagsterExecutionStepExecutionError``."""
    while error is not None and error.cls_name == "DagsterExecutionStepExecutionError" and error.cause is not None:
        error = error.cause
    return error


def _assets_of_steps(repository: RepositoryDefinition | None, step_keys: Sequence[str]) -> list[AssetKey]:
    """The asset each failed step materializes: an asset's step key is its key as a Python identifier."""
    if repository is None:
        return []
    by_step = {key.to_python_identifier(): key for key in repository.asset_graph.get_all_asset_keys()}
    return [by_step[step] for step in step_keys if step in by_step]


def freshness_alert(
    instance: DagsterInstance, record: EventLogRecord, repository: RepositoryDefinition | None
) -> Alert | None:
    """A ``FRESHNESS_STATE_CHANGE`` into FAIL: the asset, its policy's window and how old its newest data was."""
    event = record.event_log_entry.dagster_event
    if event is None:
        return None
    change = event.asset_freshness_state_change_data
    if getattr(change.new_state, "value", change.new_state) != "FAIL":
        return None
    key = change.key
    policy = (
        repository.asset_graph.get(key).freshness_policy if repository and repository.asset_graph.has(key) else None
    )
    fail_window = getattr(policy, "fail_window", None)  # a cron policy has a deadline instead
    if fail_window is not None:
        rule = (
            f"freshness policy: fails {fail_window.to_timedelta().total_seconds() / 3600:g} h after a materialization"
        )
    else:
        rule = "freshness policy"
    latest = instance.get_latest_materialization_event(key)
    if latest is not None:
        age_h = (change.state_change_timestamp - latest.timestamp) / 3600
        value = f"last materialized {age_h:.1f} h before the check"
        partition = latest.asset_materialization.partition if latest.asset_materialization else None
        mlflow_url = _mlflow_link(latest.asset_materialization.metadata) if latest.asset_materialization else ""
    else:
        value, partition, mlflow_url = "never materialized", None, ""
    asset = key.to_user_string()
    return Alert(
        cause=FRESHNESS,
        pipeline=_pipeline(repository, key),
        asset=asset,
        partition=f"latest: {partition}" if partition else "",
        rule=rule,
        value=value,
        # No run failed: the link is the asset's page (its latest partition's), where its materializations are.
        dagster_url=dagster_asset_url(_ui(), asset, partition or ""),
        mlflow_url=mlflow_url,
    )


KEY_FRESHNESS_SUFFIX = "_fresh"  # the per-key freshness checks (pipelines/reporting/freshness.py: city_fresh)


def freshness_records(instance: DagsterInstance, after: int) -> list[EventLogRecord]:
    """The freshness state changes after storage id ``after``, oldest first (the index shard holds them on SQLite too)."""
    return list(
        instance.event_log_storage.get_event_records(
            EventRecordsFilter(event_type=DagsterEventType.FRESHNESS_STATE_CHANGE, after_cursor=after),
            limit=BATCH,
            ascending=True,
        )
    )


def latest_freshness_id(instance: DagsterInstance) -> int:
    newest = instance.event_log_storage.get_event_records(
        EventRecordsFilter(event_type=DagsterEventType.FRESHNESS_STATE_CHANGE), limit=1, ascending=False
    )
    return newest[0].storage_id if newest else 0


def _key_freshness_checks(repository: RepositoryDefinition | None) -> list[AssetCheckKey]:
    if repository is None:
        return []
    return sorted(
        (key for key in repository.asset_graph.asset_check_keys if key.name.endswith(KEY_FRESHNESS_SUFFIX)),
        key=lambda key: (key.asset_key.to_user_string(), key.name),
    )


def key_freshness_records(
    instance: DagsterInstance, repository: RepositoryDefinition | None, after: int | None
) -> tuple[list[Any], int]:
    """The per-key freshness checks recorded as failed outside any run after check-execution id ``after``, oldest
    first, and the newest id seen (``after`` None: none, only the newest id: a first tick replays no history)."""
    storage = instance.event_log_storage
    failed, newest = [], after or 0
    for key in _key_freshness_checks(repository):
        if after is None:
            latest = storage.get_asset_check_execution_history(key, limit=1)
            newest = max([newest, *(record.id for record in latest)])
            continue
        for record in storage.get_asset_check_execution_history(key, limit=BATCH):  # newest first
            if record.id <= after:
                break
            if record.status.value == "FAILED" and not record.run_id and record.event is not None:
                failed.append(record)
            newest = max(newest, record.id)
    return sorted(failed, key=lambda record: record.id), newest


def key_freshness_alert(record: Any, repository: RepositoryDefinition | None) -> Alert | None:
    """A per-key freshness check (``city_fresh``) a sensor recorded as failed, outside any run: one city is stale.

    ``record``: an ``AssetCheckExecutionRecord`` (checks evaluated in runs are alerted by the run sensors)."""
    event = record.event.dagster_event if record.event is not None else None
    if event is None or record.run_id:
        return None
    evaluation = event.asset_check_evaluation_data
    if evaluation.passed or not evaluation.check_name.endswith(KEY_FRESHNESS_SUFFIX):
        return None
    metadata = {key: getattr(value, "value", value) for key, value in (evaluation.metadata or {}).items()}
    age = metadata.get("age_hours")
    value = f"{metadata.get('status', 'stale')}: newest date {metadata.get('newest_date') or 'none'}" + (
        f", materialized {float(age):.1f} h ago" if isinstance(age, int | float) else ""
    )
    asset = evaluation.asset_key.to_user_string()
    partition = evaluation.partition or ""
    return Alert(
        cause=FRESHNESS,
        pipeline=_pipeline(repository, evaluation.asset_key),
        asset=asset,
        partition=partition,
        rule=clip(f"{evaluation.check_name}: {evaluation.description or 'stale'}", 500),
        value=value,
        dagster_url=dagster_asset_url(_ui(), asset, partition),
    )
