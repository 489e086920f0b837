"""MLflow conventions shared by the training workloads and the registry (no dagster import).

Tag names have one meaning everywhere (runs and model versions alike):

- ``mltrain.partition``: the Dagster partition key exactly as Dagster writes it
  (``2026-11-27``; ``nyc|2026-11-27`` for date x city). Absent on a run started outside Dagster.
- ``mltrain.date``: the partition's date, ``YYYY-MM-DD``.
- ``mltrain.dagster_run_id`` / ``mltrain.dagster_run_url``: the Dagster run that trained or
  registered it, and its page in the Dagster UI.
- ``mltrain.dagster_asset_url``: the asset partition's page in the Dagster UI.

Bounded waits: MLflow's HTTP client retries every request on its own (connection errors and
408/429/5xx answers; ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, default 7, exponential backoff of
``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` capped at 120 s, ``MLFLOW_HTTP_REQUEST_TIMEOUT`` default
120 s per attempt): about 4 minutes per call against a dead server, and 36 minutes stacked under
a step's retries. ``bound_http_retries`` gives both planes one smaller budget (``HTTP_RETRY_DEFAULTS``,
each overridable by its environment variable), and ``tracking_errors`` turns a call that ran
out of it into ``TrackingServerUnavailable``: one line naming the server, its URL, the attempts,
the time spent and why.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import quote

from mltrain_assets.workloads.common.params import MlflowSettings

PARTITION_TAG = "mltrain.partition"
DATE_TAG = "mltrain.date"
DAGSTER_RUN_ID_TAG = "mltrain.dagster_run_id"
DAGSTER_RUN_URL_TAG = "mltrain.dagster_run_url"
DAGSTER_ASSET_URL_TAG = "mltrain.dagster_asset_url"


def dagster_run_url(ui_url: str, run_id: str) -> str:
    """The run's page in the Dagster UI: ``{ui}/runs/{run_id}``."""
    return f"{ui_url.rstrip('/')}/runs/{run_id}"


def dagster_asset_url(ui_url: str, asset_key: str, partition_key: str = "") -> str:
    """An asset's page in the Dagster UI, on one partition's detail when given.

    ``{ui}/assets/{key path}?view=partitions&partition={key}`` (the asset's Partitions tab with
    that partition selected: its latest materialization and metadata); ``asset_key`` is the user
    string (``a/b`` for a multi-part key).
    """
    path = "/".join(quote(part, safe="") for part in asset_key.split("/"))
    url = f"{ui_url.rstrip('/')}/assets/{path}"
    if partition_key:
        url += f"?view=partitions&partition={quote(partition_key, safe='')}"
    return url


def mlflow_run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def mlflow_run_artifact_url(ui_url: str, experiment_id: str, run_id: str, path: str) -> str:
    """One artifact of a run, opened in the MLflow UI's artifact browser."""
    return f"{mlflow_run_url(ui_url, experiment_id, run_id)}/artifactPath/{path}"


def mlflow_model_version_url(ui_url: str, name: str, version: str) -> str:
    """A registered model version's page in the MLflow UI."""
    return f"{ui_url.rstrip('/')}/#/models/{quote(name, safe='')}/versions/{version}"


def dagster_tags(*, ui_url: str = "", run_id: str = "", asset_key: str = "", partition_key: str = "") -> dict[str, str]:
    """The Dagster launch as tags: id, partition and links (only what is known; none standalone)."""
    tags = {}
    if partition_key:
        tags[PARTITION_TAG] = partition_key
    if run_id:
        tags[DAGSTER_RUN_ID_TAG] = run_id
        if ui_url:
            tags[DAGSTER_RUN_URL_TAG] = dagster_run_url(ui_url, run_id)
    if ui_url and asset_key:
        tags[DAGSTER_ASSET_URL_TAG] = dagster_asset_url(ui_url, asset_key, partition_key)
    return tags


def run_tags(settings: MlflowSettings) -> dict[str, str]:
    """The tags linking a workload's MLflow run to the Dagster launch its params name."""
    return dagster_tags(
        ui_url=settings.dagster_ui_url,
        run_id=settings.dagster_run_id,
        asset_key=settings.dagster_asset_key,
        partition_key=settings.dagster_partition_key,
    )


# MLflow's own client settings, applied where unset (a deployment's own values win). With these, one
# call against a server that refuses connections fails after 5 attempts and ~28-31 s of backoff
# (0 + 4 + 8 + 16 s, plus up to 1 s jitter each); against one that accepts and never answers,
# after 5 x 15 s + the backoff (~106 s). 15 s per attempt: a registry call answers in well under a
# second, and an artifact upload through the server (one PUT up to 500 MB) gets 15 s of silence.
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1.0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
# urllib3 caps each backoff sleep at this many seconds (Retry.DEFAULT_BACKOFF_MAX).
_BACKOFF_MAX_S = 120.0


@dataclasses.dataclass(frozen=True)
class HttpRetryBudget:
    """How long MLflow's HTTP client keeps trying one call (urllib3 ``Retry`` as MLflow configures it)."""

    max_retries: int
    backoff_factor: float
    backoff_jitter: float
    timeout_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HttpRetryBudget:
        env = os.environ if env is None else env

        def value(name: str) -> str:
            return env.get(name) or HTTP_RETRY_DEFAULTS[name]

        return cls(
            max_retries=int(value("MLFLOW_HTTP_REQUEST_MAX_RETRIES")),
            backoff_factor=float(value("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")),
            backoff_jitter=float(value("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER")),
            timeout_s=float(value("MLFLOW_HTTP_REQUEST_TIMEOUT")),
        )

    @property
    def attempts(self) -> int:
        return self.max_retries + 1

    def backoff_s(self) -> float:
        """The longest total sleep between attempts: urllib3 sleeps 0 before the first retry, then factor x 2^(n-1)."""
        sleeps = [
            min(_BACKOFF_MAX_S, self.backoff_factor * 2 ** (n - 1) + self.backoff_jitter)
            for n in range(2, self.attempts)
        ]
        return float(sum(sleeps))

    def worst_case_s(self) -> float:
        """One call against a server that accepts connections and never answers: every attempt times out."""
        return self.attempts * self.timeout_s + self.backoff_s()


def bound_http_retries() -> HttpRetryBudget:
    """Give this process's MLflow HTTP client ``HTTP_RETRY_DEFAULTS`` where the environment sets nothing.

    MLflow reads these variables on every request, so this takes effect for clients already built.
    """
    for name, value in HTTP_RETRY_DEFAULTS.items():
        if not os.environ.get(name):
            os.environ[name] = value
    return HttpRetryBudget.from_env()


class TrackingServerUnavailable(RuntimeError):
    """The tracking server did not answer usefully within the client's retry budget."""

    def __init__(self, url: str, attempts: int, elapsed_s: float, reason: str, action: str = ""):
        self.url, self.attempts, self.elapsed_s, self.reason, self.action = url, attempts, elapsed_s, reason, action
        doing = f" ({action})" if action else ""
        super().__init__(
            f"MLflow tracking server {url} unreachable after {attempts} attempts over {elapsed_s:.0f} s: {reason}{doing}"
        )

    def __reduce__(self):  # picklable with its fields (a process pool re-raises it in its parent)
        return (type(self), (self.url, self.attempts, self.elapsed_s, self.reason, self.action))


def is_http_uri(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def unavailable_reason(exc: BaseException) -> str | None:
    """Why MLflow's client gave up on the server (``None``: it got an answer, e.g. a JSON error it raised).

    MLflow wraps whatever requests raised into ``MlflowException("API request to <url> failed with
    exception ...")``; a ``RestException`` is the server's own answer (an error it chose to return).
    """
    from mlflow.exceptions import RestException

    if isinstance(exc, RestException):
        return None
    text = str(exc)
    if not text.startswith("API request to "):
        return None
    statuses = re.search(r"too many (\d{3}) error responses", text)
    if statuses:
        return f"it answered HTTP {statuses.group(1)} to every attempt"
    for needle, reason in (
        ("Connection refused", "connection refused"),
        ("timed out", "no answer within MLFLOW_HTTP_REQUEST_TIMEOUT"),
        ("Name or service not known", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("Temporary failure in name resolution", "host name not found"),
        ("RemoteDisconnected", "connection closed without an answer"),
        ("Connection reset", "connection reset"),
        ("Connection aborted", "connection aborted"),
    ):
        if needle in text:
            return reason
    return text.partition("failed with exception ")[2][:300] or text[:300]


@contextmanager
def tracking_errors(tracking_uri: str, action: str = "") -> Iterator[None]:
    """Raise ``TrackingServerUnavailable`` for an MLflow call to an http(s) server that ran out of retries."""
    start = time.monotonic()
    try:
        yield
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        reason = unavailable_reason(exc) if isinstance(exc, MlflowException) and is_http_uri(tracking_uri) else None
        if reason is None:
            raise
        budget = HttpRetryBudget.from_env()
        raise TrackingServerUnavailable(
            tracking_uri.rstrip("/"), budget.attempts, time.monotonic() - start, reason, action
        ) from None


def use_tracking(settings: MlflowSettings) -> None:
    """Point this workload process at the tracking store its params name, with bounded HTTP retries."""
    bound_http_retries()
    if settings.tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    if settings.artifacts_uri:
        os.environ["MLTRAIN_MLFLOW_ARTIFACTS_URI"] = settings.artifacts_uri


def ensure_experiment(name: str) -> str:
    """Select (creating if needed) experiment ``name``; returns its id.

    With a local store the artifact root goes under ``MLTRAIN_MLFLOW_ARTIFACTS_URI``
    rather than a ``mlruns/`` folder in whatever the working directory is; a
    tracking server decides its own artifact root.

    It is a workload's first call to the server: an unreachable one fails here, within the bounded
    retries (``bound_http_retries``), as ``TrackingServerUnavailable`` naming the URL.
    """
    import mlflow  # here, not at module scope: the control plane imports this module for its tag names

    bound_http_retries()
    tracking_uri = mlflow.get_tracking_uri()
    with tracking_errors(tracking_uri, f"selecting experiment {name!r}"):
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            artifact_root = os.environ.get("MLTRAIN_MLFLOW_ARTIFACTS_URI")
            use_local_root = artifact_root and not is_http_uri(tracking_uri)
            try:
                experiment_id = mlflow.create_experiment(
                    name, artifact_location=f"{artifact_root.rstrip('/')}/{name}" if use_local_root else None
                )
            except mlflow.exceptions.MlflowException as exc:
                if unavailable_reason(exc) is not None:
                    raise
                # Another worker created it between our lookup and create.
                experiment_id = mlflow.get_experiment_by_name(name).experiment_id
        else:
            experiment_id = experiment.experiment_id
        mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id
