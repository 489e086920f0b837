"""What every workload shares: its typed params, and reporting to Dagster Pipes when launched by it.

A workload module ends with ``main = workload_main(Params, body)``: the body receives the
parsed params and a ``Reporter`` and returns the summary sent back to the control plane.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, PipesContext, open_dagster_pipes

from mltrain_assets.artifacts import AlreadyCommitted, ArtifactCorrupt, StorageUnavailable, writing_for
from mltrain_assets.workloads.common.params import WorkloadParams
from mltrain_assets.workloads.common.spark import SparkCannotReach, SparkMasterUnreachable
from mltrain_assets.workloads.common.spark_connect import SparkConnectUnreachable, connect_failure
from mltrain_assets.workloads.common.tracking import TrackingServerUnavailable

# Exit code meaning "the input data broke a rule": retrying cannot help.
EXIT_DATA_REJECTED = 3
# Exit code meaning "a service (object store, MLflow, Spark master) stayed down through its client's retries";
# the reported summary key says whether a step retry may help (service_interrupted: yes).
EXIT_SERVICE_UNAVAILABLE = 4
SERVICE_ERRORS = (StorageUnavailable, TrackingServerUnavailable, SparkMasterUnreachable)

P = TypeVar("P", bound=WorkloadParams)


class DataRejected(Exception):
    """Input data broke a rule; the message names the partition, the rule and the observed value."""


# Failures retrying cannot help: (exceptions, summary key the backend reads, log label, exit code).
_FAILURE_KINDS = (
    ((DataRejected,), "data_rejected", "DATA REJECTED", EXIT_DATA_REJECTED),
    # The service's client already retried for its whole bounded budget: a step retry would only repeat it.
    (SERVICE_ERRORS, "service_unavailable", "SERVICE UNAVAILABLE", EXIT_SERVICE_UNAVAILABLE),
    # A long-lived server (Spark Connect) unreachable or restarted mid-query: a fresh session on a retry may pass.
    ((SparkConnectUnreachable,), "service_interrupted", "SERVICE INTERRUPTED", EXIT_SERVICE_UNAVAILABLE),
    # A setting, not a fault: the same run would fail the same way on every retry.
    ((SparkCannotReach,), "misconfigured", "MISCONFIGURED", EXIT_DATA_REJECTED),
    # An input's files differ from their manifest: it is quarantined; retrying cannot help.
    ((ArtifactCorrupt,), "input_corrupt", "INPUT CORRUPT", EXIT_DATA_REJECTED),
)
REPORTED_FAILURES = tuple(error for errors, *_ in _FAILURE_KINDS for error in errors)


class Reporter:
    """Progress and logs; forwarded through Pipes when Dagster launched us."""

    def __init__(self, name: str, pipes: PipesContext | None):
        self.name = name
        self.pipes = pipes
        self._logger = logging.getLogger(f"mltrain.{name}")
        self._start = time.monotonic()

    def info(self, message: str) -> None:
        line = f"[{self.name} +{time.monotonic() - self._start:6.1f}s] {message}"
        if self.pipes is not None:
            self.pipes.log.info(line)
        print(line, file=sys.stderr, flush=True)

    def progress(self, done: int, total: int, what: str) -> None:
        self.info(f"{what}: {done}/{total} ({100.0 * done / max(total, 1):.0f}%)")

    def report(self, summary: dict) -> None:
        """Send the result summary back (the manifest holds the durable copy)."""
        if self.pipes is not None:
            self.pipes.report_custom_message(json.loads(json.dumps(summary, default=str)))


@contextmanager
def workload_session(name: str) -> Iterator[Reporter]:
    if os.environ.get(DAGSTER_PIPES_CONTEXT_ENV_VAR):  # launched by Dagster Pipes
        with open_dagster_pipes() as pipes:
            yield Reporter(name, pipes)
    else:
        yield Reporter(name, None)


def run_workload(
    params_type: type[P], body: Callable[[P, Reporter], dict[str, Any] | None], argv: Sequence[str] | None = None
) -> int:
    """Parse ``--params`` and run ``body`` in a session; a data rejection is reported, then exits ``EXIT_DATA_REJECTED``."""
    params = params_type.parse_args(argv)
    params.require_output()
    name = params_type.module.removeprefix("mltrain_assets.workloads.")
    with workload_session(name) as reporter, writing_for(params_type.module, params.recorded_fields()):
        try:
            summary = _named(body, params, reporter)
        except REPORTED_FAILURES as exc:
            key, label, code = next((k, lb, c) for types, k, lb, c in _FAILURE_KINDS if isinstance(exc, types))
            reporter.report({key: str(exc)})
            print(f"{label}: {exc}", file=sys.stderr, flush=True)
            return code
        except AlreadyCommitted as exc:
            # Another run committed this very version first: adopt its commit.
            reporter.info(f"{exc.uri} was committed by another run meanwhile; adopting its commit")
            summary = exc.manifest.get("summary", {})
        reporter.report(summary or {})
    return 0


def _named(body: Callable[[P, Reporter], dict[str, Any] | None], params: P, reporter: Reporter) -> Any:
    """``body(params, reporter)``; a Spark Connect client's error for a server that went away, named (its URL)."""
    try:
        return body(params, reporter)
    except Exception as exc:
        lost = connect_failure(exc)
        if lost is None or lost is exc:
            raise
        raise lost from exc


def workload_main(
    params_type: type[P], body: Callable[[P, Reporter], dict[str, Any] | None]
) -> Callable[[Sequence[str] | None], int]:
    """The ``main(argv=None)`` of a workload module."""

    def main(argv: Sequence[str] | None = None) -> int:
        return run_workload(params_type, body, argv)

    return main
