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
from collections.abc import Sequence

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunStatusSensorContext,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)

# What an alert is and how it is sent (alert_delivery), what happened as alerts (alert_events): importable here.
from mltrain_assets.core.alert_delivery import (
    FORMATS,
    FRESHNESS,
    GATE_FAILED,
    PROMOTION,
    RUN_FAILURE,
    TITLES,
    Alert,
    AlertSettings,
    deliver,
    json_payload,
    payload,
    slack_payload,
    unique,
)
from mltrain_assets.core.alert_events import (
    KEY_FRESHNESS_SUFFIX,
    failure_alert,
    freshness_alert,
    freshness_records,
    key_freshness_alert,
    key_freshness_records,
    latest_freshness_id,
    run_alerts,
)

__all__ = [
    "ALERT_SENSORS",
    "FORMATS",
    "FRESHNESS",
    "GATE_FAILED",
    "KEY_FRESHNESS_SUFFIX",
    "PROMOTION",
    "RUN_FAILURE",
    "TITLES",
    "Alert",
    "AlertSettings",
    "alert_failed_runs",
    "alert_finished_runs",
    "alert_freshness",
    "deliver",
    "failure_alert",
    "freshness_alert",
    "freshness_records",
    "json_payload",
    "key_freshness_alert",
    "key_freshness_records",
    "payload",
    "run_alerts",
    "slack_payload",
]

OFF = "MLTRAIN_ALERT_WEBHOOK_URL is not set: alerts are off"


def _sent(alerts: Sequence[Alert], sent: Sequence[Alert]) -> str:
    """What a tick did, in one line."""
    if not alerts:
        return "nothing to alert"
    return f"{len(sent)} of {len(alerts)} alert(s) sent: " + "; ".join(a.title for a in alerts)[:900]


def _alert_run(context: RunStatusSensorContext) -> None:
    """Send the run's failed checks and promotions, and for a failed run (a failure context) its failure."""
    settings = AlertSettings.from_env()
    if not settings.webhook_url:
        context.log.debug(OFF)
        return
    repository = context.repository_def
    alerts = run_alerts(context.instance, context.dagster_run, repository)
    if isinstance(context, RunFailureSensorContext):
        failure = failure_alert(context, alerts, repository)
        alerts = [failure, *alerts] if failure else alerts
    context.log.info(f"run {context.dagster_run.run_id}: {_sent(alerts, deliver(alerts, settings, context.log))}")


FAILED_RUNS = "A failed run, its failed gates and its promotions: one notification each (core/alerts.py)."
FINISHED_RUNS = "The failed checks and the promotions of a successful run: one notification each (core/alerts.py)."


# The run sensors return None: Dagster's run status sensor then moves on to the next run in the same tick
# (a returned SkipReason would end the tick after one run), and records that the run was handled.
@run_failure_sensor(name="alert_failed_runs", description=FAILED_RUNS, default_status=DefaultSensorStatus.RUNNING)
def alert_failed_runs(context: RunFailureSensorContext) -> None:
    _alert_run(context)


@run_status_sensor(
    name="alert_finished_runs",
    run_status=DagsterRunStatus.SUCCESS,
    description=FINISHED_RUNS,
    default_status=DefaultSensorStatus.RUNNING,
)
def alert_finished_runs(context: RunStatusSensorContext) -> None:
    _alert_run(context)


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
        context.update_cursor(json.dumps({"events": latest_freshness_id(instance), "checks": checks}))
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
