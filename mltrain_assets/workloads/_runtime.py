"""What every workload shares: reporting to Dagster Pipes when launched by it, to the console otherwise."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dagster_pipes import (
    DAGSTER_PIPES_CONTEXT_ENV_VAR,
    PipesContext,
    open_dagster_pipes,
)

# Exit code meaning "the input data broke a rule": retrying cannot help.
EXIT_DATA_REJECTED = 3


class DataRejected(Exception):
    """Input data broke a rule; the message names the partition, the rule and the observed value."""


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
    name: str, parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace, Reporter], dict]
) -> int:
    """Parse args and run ``body`` in a session; a data rejection is reported, then exits ``EXIT_DATA_REJECTED``."""
    args = parser.parse_args()
    with workload_session(name) as reporter:
        try:
            summary = body(args, reporter)
        except DataRejected as exc:
            reporter.report({"data_rejected": str(exc)})
            print(f"DATA REJECTED: {exc}", file=sys.stderr, flush=True)
            return EXIT_DATA_REJECTED
        reporter.report(summary or {})
    return 0
