"""What an alert is and how it is sent: the ``Alert``, its Slack or JSON payload, and its delivery to the webhook.

Delivery is retried (``MLTRAIN_ALERT_ATTEMPTS``, exponential backoff) and never raises: an undeliverable
alert is logged (naming only the webhook's host) and dropped. The sensors that find alerts are ``core/alerts.py``.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from mltrain_assets.core.promotion import STAGING_ALIAS

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


def clip(text: str, limit: int) -> str:
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
        {"type": "header", "text": {"type": "plain_text", "text": clip(alert.title, 150)}},
        {
            "type": "section",
            # Slack caps a field at 2,000 characters.
            "fields": [{"type": "mrkdwn", "text": clip(f"*{name}*\n{value or '-'}", 2000)} for name, value in fields],
        },
    ]
    if links:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(links)}]})
    text = f"{alert.title}: {alert.rule}" + (f" ({alert.value})" if alert.value else "")
    return {"text": clip(text, 3000), "blocks": blocks}


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
