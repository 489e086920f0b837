"""Alerts: a failed run, a failed gate, a freshness breach and a promotion each post one notification to a webhook.

Built on Dagster's own sensors, which the daemon evaluates in the code server:

- ``alert_failed_runs`` (``@run_failure_sensor``): each failed run of this code location, once. It alerts the
  gates (asset checks) that failed in the run and the promotions the run made; the failure itself is alerted
  unless a failed blocking gate explains it (the gate's alert links the run) or Dagster retries the run
  (``dagster/will_retry``: the retry's own outcome alerts).
- ``alert_finished_runs`` (``@run_status_sensor`` on success): the failed checks (non-blocking ones, e.g.
  Dagster's freshness checks) and promotions of each successful run, once.
- ``alert_freshness``: the FAIL transitions Dagster's freshness daemon records for each asset's
  ``FreshnessPolicy`` (``FRESHNESS_STATE_CHANGE`` events), read after a storage-id cursor; its first tick
  starts at the newest event, so enabling alerts does not replay history.

Each alert names the pipeline, asset, partition (a check's own partition when partitioned, else the one its
result names, else the run's), rule and observed value, with links to the Dagster run (the asset's page for a
freshness breach; ``MLTRAIN_DAGSTER_UI_URL``) and the MLflow version or run the step recorded
(``MLTRAIN_MLFLOW_UI_URL``). One alert per cause, asset, partition and rule per run or
event: a check evaluated again by a retried step is not sent twice. Delivery is retried
(``MLTRAIN_ALERT_ATTEMPTS``, exponential backoff) and an undeliverable alert is logged and dropped: the
sensors' cursors move on, so a dead receiver never repeats or blocks alerts, and no run depends on them.
With ``MLTRAIN_ALERT_WEBHOOK_URL`` unset the sensors stay registered (the UI lists them) and each tick
skips, saying so.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    EventLogRecord,
    EventRecordsFilter,
    RepositoryDefinition,
    RunFailureSensorContext,
    RunStatusSensorContext,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from mltrain_assets.core.promotion import REPLAYED_SUFFIX, STAGING_ALIAS
from mltrain_assets.settings import DEFAULT_DAGSTER_UI_URL
from mltrain_assets.workloads.common.tracking import dagster_asset_url, dagster_run_url

if TYPE_CHECKING:
    from mltrain_assets.core.dagster_private import SerializableErrorInfo

logger = logging.getLogger(__name__)

RUN_FAILURE = "run_failure"
GATE_FAILED = "gate_failed"
FRESHNESS = "freshness"
PROMOTION = "promotion"
TITLES = {
    RUN_FAILURE: "Run failed",
    GATE_FAILED: "Gate failed",
    FRESHNESS: "Freshness breached",
    PROMOTION: f"New `{STAGING_ALIAS}` model",
}
FORMATS = ("slack", "json")
DEFAULT_ATTEMPTS = 3
# The first retry's wait in seconds, doubling up to 8x: 1 + 2 s with the default 3 attempts.
BACKOFF_S = 1.0
# Seconds per delivery attempt: a receiver that accepts and never answers costs at most this per try.
TIMEOUT_S = 10.0
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


@dataclass(frozen=True)
class Alert:
    """One notification: what happened (cause), where (pipeline, asset, partition), why (rule, value), links."""

    cause: str
    pipeline: str
    asset: str
    partition: str
    rule: str
    value: str
    run_id: str = ""
    dagster_url: str = ""
    mlflow_url: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Alerts with the same key are one alert (a check evaluated again by a retried step)."""
        return (self.cause, self.asset, self.partition, self.rule)

    @property
    def title(self) -> str:
        where = " ".join(part for part in (self.pipeline, self.asset, self.partition) if part)
        return f"{TITLES[self.cause]}: {where}" if where else TITLES[self.cause]


@dataclass(frozen=True)
class AlertSettings:
    """Where and how alerts go (``MLTRAIN_ALERT_*``); an empty ``webhook_url`` turns them off."""

    webhook_url: str
    format: str = "slack"
    attempts: int = DEFAULT_ATTEMPTS
    backoff_s: float = BACKOFF_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AlertSettings:
        env = os.environ if env is None else env
        attempts = env.get("MLTRAIN_ALERT_ATTEMPTS") or str(DEFAULT_ATTEMPTS)
        return cls(
            webhook_url=env.get("MLTRAIN_ALERT_WEBHOOK_URL", "").strip(),
            format=env.get("MLTRAIN_ALERT_FORMAT") or "slack",
            attempts=max(1, int(attempts)),
            backoff_s=BACKOFF_S,
        )

    @property
    def receiver(self) -> str:
        """The webhook's host, for logs: the full URL is a credential (a Slack webhook's path is its secret)."""
        return urlsplit(self.webhook_url).netloc or "the webhook"


# ------------------------------------------------------------------ payloads


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Slack's incoming-webhook form: ``text`` (the notification line) and Block Kit ``blocks``."""
    fields = [
        ("Pipeline", alert.pipeline),
        ("Asset", alert.asset),
        ("Partition", alert.partition),
        ("Rule", alert.rule),
        ("Value", alert.value),
    ]
    links = [f"<{url}|{label}>" for label, url in _links(alert).items()]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(alert.title, 150)}},
        {
            "type": "section",
            # Slack caps a field at 2,000 characters.
            "fields": [{"type": "mrkdwn", "text": _clip(f"*{name}*\n{value or '-'}", 2000)} for name, value in fields],
        },
    ]
    if links:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(links)}]})
    text = f"{alert.title}: {alert.rule}" + (f" ({alert.value})" if alert.value else "")
    return {"text": _clip(text, 3000), "blocks": blocks}


def json_payload(alert: Alert) -> dict[str, Any]:
    """The generic form: every field by name, the links under ``links``."""
    fields = asdict(alert)
    for name in ("dagster_url", "mlflow_url"):
        fields.pop(name)
    return {"source": "mltrain", "title": alert.title, **fields, "links": _links(alert)}


def _links(alert: Alert) -> dict[str, str]:
    dagster_label = "Dagster run" if alert.run_id else "Dagster asset"
    mlflow_label = "MLflow version" if alert.cause == PROMOTION else "MLflow"
    return {label: url for label, url in ((dagster_label, alert.dagster_url), (mlflow_label, alert.mlflow_url)) if url}


def payload(alert: Alert, fmt: str) -> dict[str, Any]:
    if fmt not in FORMATS:
        raise ValueError(f"alert format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return slack_payload(alert) if fmt == "slack" else json_payload(alert)


# ------------------------------------------------------------------ delivery


class _Refused(Exception):
    """The receiver answered with a client error: sending the same body again cannot help."""


def _retryable(error: BaseException) -> bool:
    return isinstance(error, OSError)  # connection errors, timeouts, and the 5xx/408/429 answers raised below


def _post(url: str, body: bytes) -> None:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
            answer.read()
    except urllib.error.HTTPError as error:
        if error.code in (408, 429) or error.code >= 500:
            raise
        raise _Refused(f"HTTP {error.code} {error.reason}") from None


def _describe(error: BaseException) -> str:
    """``ConnectionRefusedError: ...`` for a connection that failed (urllib wraps it), ``HTTP Error 503: ...`` for an answer."""
    reason = getattr(error, "reason", None)
    if not isinstance(error, urllib.error.HTTPError) and isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return f"{type(error).__name__}: {error}"


def deliver(alerts: Iterable[Alert], settings: AlertSettings, log: logging.Logger | None = None) -> list[Alert]:
    """Post each alert (retried within ``settings.attempts``); the ones delivered. Never raises.

    After one alert could not be delivered, the rest of the batch is logged, not tried: a receiver that
    is down or hangs would otherwise hold the sensor tick for every alert's retries.
    """
    log = log or logger
    sent: list[Alert] = []
    failure = ""
    for alert in alerts:
        if failure:
            log.error(f"alert not sent ({failure}): {alert.title}: {alert.rule}")
            continue
        body = json.dumps(payload(alert, settings.format)).encode()
        retrying = Retrying(
            stop=stop_after_attempt(settings.attempts),
            wait=wait_exponential(multiplier=settings.backoff_s, max=8 * settings.backoff_s),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        try:
            retrying(_post, settings.webhook_url, body)
        except (OSError, _Refused) as error:
            attempts = retrying.statistics.get("attempt_number", 1)
            failure = f"{settings.receiver} failed after {attempts} attempt(s): {_describe(error)}"
            log.error(f"alert not sent ({failure}): {alert.title}: {alert.rule}")
            continue
        log.info(f"alert sent to {settings.receiver}: {alert.title}")
        sent.append(alert)
    return sent


def unique(alerts: Iterable[Alert]) -> list[Alert]:
    """One alert per key, the first."""
    seen: dict[tuple[str, str, str, str], Alert] = {}
    for alert in alerts:
        seen.setdefault(alert.key, alert)
    return list(seen.values())


# ------------------------------------------------------------------ what happened, as alerts


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
        rule=_clip(rule, 500),
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


# ------------------------------------------------------------------ the sensors


OFF = "MLTRAIN_ALERT_WEBHOOK_URL is not set: alerts are off"


def _sent(alerts: Sequence[Alert], sent: Sequence[Alert]) -> str:
    """What a tick did, in one line."""
    if not alerts:
        return "nothing to alert"
    return f"{len(sent)} of {len(alerts)} alert(s) sent: " + "; ".join(a.title for a in alerts)[:900]


# The run sensors return None: Dagster's run status sensor then moves on to the next run in the same tick
# (a returned SkipReason would end the tick after one run), and records that the run was handled.
@run_failure_sensor(
    name="alert_failed_runs",
    description="A failed run, its failed gates and its promotions: one notification each (core/alerts.py).",
    default_status=DefaultSensorStatus.RUNNING,
)
def alert_failed_runs(context: RunFailureSensorContext) -> None:
    settings = AlertSettings.from_env()
    if not settings.webhook_url:
        context.log.debug(OFF)
        return
    repository = context.repository_def
    alerts = run_alerts(context.instance, context.dagster_run, repository)
    failure = failure_alert(context, alerts, repository)
    alerts = [failure, *alerts] if failure else alerts
    context.log.info(f"run {context.dagster_run.run_id}: {_sent(alerts, deliver(alerts, settings, context.log))}")


@run_status_sensor(
    name="alert_finished_runs",
    run_status=DagsterRunStatus.SUCCESS,
    description="The failed checks and the promotions of a successful run: one notification each (core/alerts.py).",
    default_status=DefaultSensorStatus.RUNNING,
)
def alert_finished_runs(context: RunStatusSensorContext) -> None:
    settings = AlertSettings.from_env()
    if not settings.webhook_url:
        context.log.debug(OFF)
        return
    alerts = run_alerts(context.instance, context.dagster_run, context.repository_def)
    context.log.info(f"run {context.dagster_run.run_id}: {_sent(alerts, deliver(alerts, settings, context.log))}")


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


def _latest_freshness_id(instance: DagsterInstance) -> int:
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
        rule=_clip(f"{evaluation.check_name}: {evaluation.description or 'stale'}", 500),
        value=value,
        dagster_url=dagster_asset_url(_ui(), asset, partition),
    )


@sensor(
    name="alert_freshness",
    minimum_interval_seconds=60,
    description="An asset whose freshness policy fails (Dagster's freshness daemon), or one of its keys (a city) goes "
    "stale (its <key>_fresh check): one notification (core/alerts.py).",
    default_status=DefaultSensorStatus.RUNNING,
)
def alert_freshness(context: SensorEvaluationContext) -> SkipReason:
    instance = context.instance
    repository = context.repository_def
    # The cursor: the last freshness state change and the last per-key check execution seen (a bare number: the former).
    cursor = json.loads(context.cursor) if context.cursor else None
    if isinstance(cursor, int):
        cursor = {"events": cursor, "checks": None}
    if cursor is None:  # the first tick: alert from here on, not on the instance's history
        _, checks = key_freshness_records(instance, repository, None)
        context.update_cursor(json.dumps({"events": _latest_freshness_id(instance), "checks": checks}))
        return SkipReason("started: alerting on freshness changes from now on")
    settings = AlertSettings.from_env()
    records = freshness_records(instance, int(cursor["events"]))
    stale_keys, checks = key_freshness_records(instance, repository, cursor["checks"])
    context.update_cursor(
        json.dumps({"events": records[-1].storage_id if records else cursor["events"], "checks": checks})
    )
    if not settings.webhook_url:
        return SkipReason(OFF)
    found = [
        *(freshness_alert(instance, record, repository) for record in records),
        *(key_freshness_alert(record, repository) for record in stale_keys),
    ]
    alerts = unique(a for a in found if a is not None)
    return SkipReason(_sent(alerts, deliver(alerts, settings, context.log)))


ALERT_SENSORS = [alert_failed_runs, alert_finished_runs, alert_freshness]
