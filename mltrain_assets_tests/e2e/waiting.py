"""Polling helpers for tests against running services: bounded, and loud about what went wrong."""

import time

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter


def failed_run_errors(instance: DagsterInstance, limit: int = 5) -> list[str]:
    errors = []
    for run in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.FAILURE]), limit=limit):
        messages = [
            e.message for e in instance.all_logs(run.run_id) if e.dagster_event and e.dagster_event.is_step_failure
        ]
        errors.append(f"{run.job_name} {run.tags.get('dagster/partition', '')}: {messages[-1:] or 'no step failure'}")
    return errors


def wait_until(predicate, *, timeout_s: float, what: str, instance: DagsterInstance | None = None, poll_s: float = 3):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    context = f"; recent failed runs: {failed_run_errors(instance)}" if instance else ""
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}{context}")
