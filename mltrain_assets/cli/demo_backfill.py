"""``mltrain demo --days N`` (N > 1): each pipeline over the dates as one asset backfill, run by a Dagster daemon.

Lands and ingests each pipeline's window here (``cli/demo.py`` executes that run), then starts a webserver and a
daemon on the instance, launches one backfill per pipeline through the webserver's GraphQL API (what the UI's
backfill dialog calls) and prints each run as it ends, read back from the instance.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Mapping

from dagster import DagsterInstance

from mltrain_assets.cli.demo import RunOutcome, _say, execute, report_metrics, report_run
from mltrain_assets.core.partitions import PARTITIONS_START_ENV
from mltrain_assets.core.pipeline import Pipeline
from mltrain_assets.instance.dagster_private import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

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


def land_and_ingest(
    pipeline: Pipeline, dates: list[str], volumes: Mapping[str, int | None], started: float
) -> RunOutcome:
    """Simulate the landing window of ``dates`` (days already landed are kept), then ingest it in one run here
    per landing dataset (``volumes``: rows per day by dataset).

    Ingested before the daemon starts, so its landing sensor adopts the days instead of starting a run per day.
    """
    from mltrain_assets.simulate import simulate_landings

    last = dates[-1]
    simulate_landings(pipeline, dates[0], last, os.environ["MLTRAIN_LANDING_URI"], volumes, lambda m: _say(m, started))
    for landing in pipeline.landings:
        first = landing.window.first(dates[0])
        _say(
            f"{' + '.join((landing.asset, *landing.day_assets))} {first}..{last} (one run, here, before the daemon starts)",
            started,
        )
        outcome = execute(landing.job, landing.asset, partition_range=(first, last))
        report_run(pipeline, outcome, started)
        if not outcome.success:
            break
    return outcome


def run_backfill_demo(
    pipelines: list[Pipeline], dates: list[str], *, volumes: dict[str, int | None] | None = None, started: float
) -> list[RunOutcome]:
    """``mltrain demo --days N``: each pipeline over ``dates`` as one asset backfill, run by a Dagster daemon.

    Lands and ingests each pipeline's window here, starts a webserver and a daemon on this instance, launches
    one backfill per pipeline through the webserver's GraphQL API (what the UI's backfill dialog calls), prints
    each run as it ends, waits for the runs automation started meanwhile, and stops both services.
    """
    outcomes = [land_and_ingest(p, dates, volumes or {}, started) for p in pipelines]
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
                report_metrics(metrics, outcome, started)
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
            outcome.add_materialization(event.step_materialization_data.materialization)
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            outcome.add_check(event.asset_check_evaluation_data)  # as ``execute`` records it
        elif event.is_step_failure and event.step_failure_data.error:
            errors.append(event.step_failure_data.error.message.strip())
    outcome.error = "; ".join(errors)[:2000]
    return outcome
