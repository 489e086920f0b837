"""How the model registry fails, as errors a Dagster step can act on (retry or not) and a pool can pickle."""

from __future__ import annotations

from dagster import Failure

from mltrain_assets.workloads.common.tracking import TrackingServerUnavailable


class RegistryUnavailable(Failure):
    """The tracking server was unreachable (or kept answering 5xx) for the whole client retry budget.

    ``allow_retries=False``: MLflow's client has already retried this call for its whole budget
    (``bound_http_retries``: ~30 s against refused connections, at most ~106 s against a server that
    never answers). The step's RetryPolicy (3 retries, 15 s exponential backoff) would repeat that
    4 times plus ~105 s of backoff; the run fails once, within the budget, and a re-run after the
    server is back is safe: registration is idempotent per lineage.
    """

    def __init__(self, cause: TrackingServerUnavailable):
        super().__init__(
            description=str(cause),
            metadata={
                "service": "MLflow tracking server",
                "url": cause.url,
                "attempts": cause.attempts,
                "elapsed_s": round(cause.elapsed_s, 1),
            },
            allow_retries=False,
        )
        self.cause = cause

    def __reduce__(self):  # picklable (a process pool re-raises it in its parent)
        return (type(self), (self.cause,))


class RegistryError(Failure):
    """The registry answered an error where an answer was needed (e.g. a failed version lookup).

    Never read as "not registered": that would register a duplicate version of the lineage.
    ``allow_retries``: False for an answer a tracking server chose (a 4xx, an error JSON: it does not
    change on retry); True for a local store's error (e.g. sqlite "database is locked"), which the
    step's retry policy may outlive without any network wait.
    """

    def __init__(self, message: str, url: str, allow_retries: bool = False):
        super().__init__(
            description=message, metadata={"service": "MLflow registry", "url": url}, allow_retries=allow_retries
        )
        self._args = (message, url, allow_retries)

    def __reduce__(self):
        return (type(self), self._args)


class AliasMoved(Exception):
    """Compare-and-set refused: the alias no longer points where the decision read it."""

    def __init__(self, name: str, alias: str, expected: str | None, actual: str | None):
        self.name, self.alias, self.expected, self.actual = name, alias, expected, actual
        super().__init__(f"`{alias}` of {name} is {_v(actual)}, expected {_v(expected)}: it moved since it was read")

    def __reduce__(self):
        return (type(self), (self.name, self.alias, self.expected, self.actual))


def _v(version: str | None) -> str:
    return f"v{version}" if version is not None else "unset"
