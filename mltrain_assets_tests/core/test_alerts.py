"""Alerts (core/alerts.py and its alert_events, alert_delivery): Dagster's sensors over real runs on a temporary
instance post to a receiver here.

Each test materializes small assets (alerting_defs.py) that fail, fail a gate, promote or go stale, evaluates
the sensor with Dagster's test helpers, and reads what a local HTTP receiver on 127.0.0.1 was sent.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    build_run_status_sensor_context,
    build_sensor_context,
    materialize,
)
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import InProcessTestWorkspaceLoadTarget, freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._daemon.freshness import FreshnessDaemon

from mltrain_assets.core import alert_delivery, alerts
from mltrain_assets_tests.core import alerting_defs
from mltrain_assets_tests.core.alerting_defs import ASSETS, MLFLOW_UI

DAGSTER_UI = "http://dagster.alerts.test"
NYC, SF = "nyc|2026-11-27", "sf|2026-11-27"


class Receiver:
    """A webhook on 127.0.0.1 that records each JSON body and answers with the next queued status (then 200)."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.statuses: list[int] = []
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(received.statuses.pop(0) if received.statuses else 200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)


@pytest.fixture
def receiver(monkeypatch) -> Iterator[Receiver]:
    receiving = Receiver()
    receiving.thread.start()
    monkeypatch.setenv("MLTRAIN_ALERT_WEBHOOK_URL", receiving.url)
    monkeypatch.setenv("MLTRAIN_ALERT_FORMAT", "slack")
    monkeypatch.setenv("MLTRAIN_ALERT_ATTEMPTS", "3")
    monkeypatch.setenv("MLTRAIN_DAGSTER_UI_URL", DAGSTER_UI)
    monkeypatch.setattr(alert_delivery, "BACKOFF_S", 0.05)  # the retries' waits, shortened
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    yield receiving
    receiving.server.shutdown()
    receiving.server.server_close()


@pytest.fixture(scope="module")
def instance(tmp_path_factory) -> Iterator[DagsterInstance]:
    """One instance for the module: each test reads its own runs' events (and freshness after its own cursor)."""
    with DagsterInstance.local_temp(str(tmp_path_factory.mktemp("dagster"))) as temp:
        yield temp


def _run(instance: DagsterInstance, selection: str, partition: str | None = None, tags=None) -> DagsterRun:
    result = materialize(
        ASSETS,
        selection=[selection],
        instance=instance,
        partition_key=partition,
        resources=alerting_defs.defs.resources,
        raise_on_error=False,
        tags=tags,
    )
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    return run


def _run_event(instance: DagsterInstance, run: DagsterRun, event_type: DagsterEventType):
    (record,) = instance.get_records_for_run(run.run_id, of_type=event_type).records
    return record.event_log_entry.dagster_event


def _failed_run_tick(instance: DagsterInstance, run: DagsterRun):
    context = build_run_status_sensor_context(
        sensor_name="alert_failed_runs",
        dagster_event=_run_event(instance, run, DagsterEventType.RUN_FAILURE),
        dagster_instance=instance,
        dagster_run=run,
        repository_def=alerting_defs.defs.get_repository_def(),
    ).for_run_failure()
    return alerts.alert_failed_runs(context)


def _finished_run_tick(instance: DagsterInstance, run: DagsterRun):
    context = build_run_status_sensor_context(
        sensor_name="alert_finished_runs",
        dagster_event=_run_event(instance, run, DagsterEventType.RUN_SUCCESS),
        dagster_instance=instance,
        dagster_run=run,
        repository_def=alerting_defs.defs.get_repository_def(),
    )
    return alerts.alert_finished_runs(context)


def _fields(slack: dict) -> dict[str, str]:
    """A Slack payload's fields as {name: value} (``*Name*\\nvalue``)."""
    (section,) = [b for b in slack["blocks"] if b["type"] == "section"]
    return dict(field["text"].removeprefix("*").split("*\n", 1) for field in section["fields"])


def _links(slack: dict) -> str:
    (context,) = [b for b in slack["blocks"] if b["type"] == "context"]
    return context["elements"][0]["text"]


def test_a_failed_run_sends_one_alert_naming_its_step_and_error(instance, receiver):
    run = _run(instance, "city_features", SF)

    assert _failed_run_tick(instance, run) is None  # None: Dagster goes on to the next run in the tick

    (slack,) = receiver.bodies
    assert slack["text"].startswith(f"Run failed: demand city_features {SF}: RuntimeError: landed file for {SF}")
    assert _fields(slack) == {
        "Pipeline": "demand",
        "Asset": "city_features",
        "Partition": SF,
        "Rule": f"RuntimeError: landed file for {SF} is truncated",
        "Value": "1 step(s) failed: city_features",
    }
    assert _links(slack) == f"<{DAGSTER_UI}/runs/{run.run_id}|Dagster run>"


@pytest.mark.parametrize("asset", ["city_model", "city_model_by_partition"])
def test_a_failed_gate_sends_one_alert_naming_the_partition_and_value(instance, receiver, asset):
    """The gate fails for sf and passes for nyc: one alert, for sf; the run failure it causes is the gate's."""
    passed = _run(instance, asset, NYC)
    failed = _run(instance, asset, SF)
    assert passed.is_success and failed.is_failure

    _finished_run_tick(instance, passed)
    _failed_run_tick(instance, failed)

    (slack,) = receiver.bodies
    assert slack["text"].startswith(
        f"Gate failed: demand {asset} {SF}: mape_below_0_15: {asset} {SF}: rule mape < 0.15"
    )
    fields = _fields(slack)
    assert fields["Partition"] == SF and fields["Asset"] == asset
    assert fields["Rule"] == f"mape_below_0_15: {asset} {SF}: rule mape < 0.15: observed mape=0.21"
    assert fields["Value"] == "mape=0.21, threshold=0.15"
    assert _links(slack) == f"<{DAGSTER_UI}/runs/{failed.run_id}|Dagster run>"


def test_a_gate_evaluated_again_by_a_retried_step_is_one_alert(instance, receiver):
    run = _run(instance, "flaky_city_model", SF)
    evaluations = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
    assert run.is_success and len(evaluations) == 2

    _finished_run_tick(instance, run)

    (slack,) = receiver.bodies
    assert _fields(slack)["Partition"] == SF and slack["text"].startswith("Gate failed: demand flaky_city_model")


def test_a_promotion_sends_one_alert_with_the_mlflow_version_and_a_replay_sends_none(instance, receiver, monkeypatch):
    monkeypatch.setenv("MLTRAIN_ALERT_FORMAT", "json")
    promoted = _run(instance, "registered_demand_model", NYC)
    replayed = _run(instance, "registered_demand_model", NYC, tags={"replayed": "true"})

    _finished_run_tick(instance, promoted)
    _finished_run_tick(instance, replayed)

    (body,) = receiver.bodies
    assert body == {
        "source": "mltrain",
        "title": f"New `staging` model: demand registered_demand_model {NYC}",
        "cause": "promotion",
        "pipeline": "demand",
        "asset": "registered_demand_model",
        "partition": NYC,
        "rule": "replaces v2 (2026-11-26)",
        "value": "demand_model/3 is `staging` (was v2); mape=0.12",
        "run_id": promoted.run_id,
        "links": {
            "Dagster run": f"{DAGSTER_UI}/runs/{promoted.run_id}",
            "MLflow version": f"{MLFLOW_UI}/#/models/demand_model/versions/3",
        },
    }


def _evaluate_freshness(instance: DagsterInstance, at: float) -> None:
    """One pass of Dagster's freshness daemon over ``alerting_defs.defs``, as if it ran at ``at``."""
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="mltrain_assets_tests.core.alerting_defs", attribute="defs")
    )
    with (
        WorkspaceProcessContext(instance, InProcessTestWorkspaceLoadTarget(origin)) as workspace,
        freeze_time(at),
    ):
        list(FreshnessDaemon().run_iteration(workspace))


def test_a_freshness_breach_sends_one_alert_and_the_next_tick_none(instance, receiver):
    def tick(cursor: str | None):
        context = build_sensor_context(instance=instance, cursor=cursor, definitions=alerting_defs.defs)
        return alerts.alert_freshness(context), context.cursor

    _, cursor = tick(None)  # the first tick starts the cursor at the newest event
    _run(instance, "city_aggregates")
    _evaluate_freshness(instance, at=time.time() + 2 * 3600)

    first, cursor = tick(cursor)
    second, _ = tick(cursor)

    (slack,) = receiver.bodies
    assert slack["text"] == (
        "Freshness breached: demand city_aggregates: freshness policy: fails 1 h after a materialization "
        "(last materialized 2.0 h before the check)"
    )
    assert _fields(slack)["Asset"] == "city_aggregates"
    assert _links(slack) == f"<{DAGSTER_UI}/assets/city_aggregates|Dagster asset>"
    assert "1 of 1 alert(s) sent" in (first.skip_message or "")
    assert second.skip_message == "nothing to alert"


def test_a_stale_city_sends_one_alert_naming_its_partition(instance, receiver):
    """The per-city freshness check a sensor records outside any run (city_fresh): one alert for the stale city."""
    from dagster import AssetCheckEvaluation, AssetCheckSeverity, AssetKey

    def tick(cursor: str | None):
        context = build_sensor_context(instance=instance, cursor=cursor, definitions=alerting_defs.defs)
        return alerts.alert_freshness(context), context.cursor

    _, cursor = tick(None)

    def record(city: str, passed: bool) -> None:
        instance.report_runless_asset_event(
            AssetCheckEvaluation(
                asset_key=AssetKey("city_model_by_partition"),
                check_name="city_fresh",
                passed=passed,
                severity=AssetCheckSeverity.ERROR,
                description=f"{city}: newest 2026-11-25, materialized 60.0 h ago (fails after 56 h)",
                metadata={"status": "fail" if not passed else "fresh", "newest_date": "2026-11-25", "age_hours": 60.0},
                partition=city,
            )
        )

    record("sf", passed=False)
    record("nyc", passed=True)
    first, cursor = tick(cursor)
    second, _ = tick(cursor)

    (slack,) = receiver.bodies
    assert _fields(slack)["Asset"] == "city_model_by_partition" and _fields(slack)["Partition"] == "sf"
    assert slack["text"].startswith("Freshness breached: demand city_model_by_partition sf: city_fresh: sf: newest")
    assert "fail: newest date 2026-11-25, materialized 60.0 h ago" in slack["text"]
    assert _links(slack) == f"<{DAGSTER_UI}/assets/city_model_by_partition?view=partitions&partition=sf|Dagster asset>"
    assert "1 of 1 alert(s) sent" in (first.skip_message or "")
    assert second.skip_message == "nothing to alert"


def test_an_answer_500_is_retried_and_the_alert_arrives(instance, receiver):
    receiver.statuses = [500]
    run = _run(instance, "city_features", NYC)

    _failed_run_tick(instance, run)

    assert len(receiver.bodies) == 2 and receiver.bodies[0] == receiver.bodies[1]  # the same alert, twice


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_receiver_that_is_down_is_logged_and_the_tick_succeeds(instance, receiver, monkeypatch, caplog):
    monkeypatch.setenv("MLTRAIN_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{_closed_port()}/services/secret-path")
    run = _run(instance, "city_features", NYC)

    assert _failed_run_tick(instance, run) is None  # the sensor tick does not fail
    assert receiver.bodies == []
    # An alert delivered directly, to read the line logged (the sensor logs through Dagster's own logger).
    with caplog.at_level(logging.ERROR, logger=alert_delivery.__name__):
        sent = alerts.deliver(
            [alerts.Alert("run_failure", "demand", "city_features", NYC, "RuntimeError: x", "")],
            alerts.AlertSettings.from_env(),
        )
    assert sent == []
    (line,) = [r.getMessage() for r in caplog.records if r.name == alert_delivery.__name__]
    assert line.startswith("alert not sent (127.0.0.1:") and "failed after 3 attempt(s): ConnectionRefusedError" in line
    assert "secret-path" not in line  # the webhook URL is a credential: only its host is logged


def test_a_client_error_is_not_retried(receiver):
    receiver.statuses = [404]
    sent = alerts.deliver([alerts.Alert("run_failure", "demand", "a", "", "r", "")], alerts.AlertSettings.from_env())
    assert sent == [] and len(receiver.bodies) == 1


def test_no_webhook_no_alert(instance, receiver, monkeypatch):
    monkeypatch.setenv("MLTRAIN_ALERT_WEBHOOK_URL", "")
    run = _run(instance, "city_features", NYC)

    assert _failed_run_tick(instance, run) is None
    assert receiver.bodies == []
    context = build_sensor_context(instance=instance, cursor="0", definitions=alerting_defs.defs)
    assert alerts.alert_freshness(context).skip_message == "MLTRAIN_ALERT_WEBHOOK_URL is not set: alerts are off"


def test_the_code_location_registers_the_alert_sensors():
    from mltrain_assets.definitions import defs

    names = {s.name for s in defs.sensors}
    assert {"alert_failed_runs", "alert_finished_runs", "alert_freshness"} <= names
