"""Spark Connect clients: a ``sc://host:port`` master makes a workload a gRPC client of a long-lived server.

No JVM starts in the workload process (or pod): the plan goes to the server, which already runs
Spark (its JVM start and code generation are paid once, not by every step). The same SQL text and
DataFrame calls run; what a classic session configures at start (driver memory, UI, log4j2, local
dirs) is the server's configuration, and only runtime SQL settings (``spark.sql.*``) are set per
session.

Reachability: the server's port is connected to first (``check_connect_server``, a few seconds),
failing with ``SparkConnectUnreachable`` naming the URL. The client's own retries of an unavailable
server are bounded (``RETRY_POLICY``: about 15 s instead of pyspark's 10 minutes), and a server that
went away or restarted mid-query (the session or operation is gone on the server, or the channel
stays unavailable) becomes ``SparkConnectUnreachable`` too (``connect_failure``): the workload
reports it and exits, and the step's retry policy runs it again on a fresh session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from mltrain_assets.workloads.common.spark import SparkSettings

CONNECT_SCHEME = "sc://"
DEFAULT_PORT = 15002  # Spark's spark.connect.grpc.binding.port default
CONNECT_ATTEMPTS = 4
CONNECT_TIMEOUT_S = 5.0
CONNECT_RETRY_DELAY_S = 1.0
# The client's retries of UNAVAILABLE (ms): 0.5 + 1 + 2 + 4 + 8 s, not pyspark's 10-minute default.
RETRY_POLICY = {"max_retries": 5, "initial_backoff": 500, "backoff_multiplier": 2.0, "max_backoff": 8000}
# What the client raises once the server it talks to is gone or was replaced (a restart loses every session).
_LOST_CONDITIONS = ("RESPONSE_ALREADY_RECEIVED", "NO_ACTIVE_SESSION")
_LOST_MARKERS = (
    "INVALID_HANDLE.SESSION_NOT_FOUND",
    "INVALID_HANDLE.SESSION_CHANGED",
    "INVALID_HANDLE.OPERATION_NOT_FOUND",
)
_LOST_GRPC_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED")

_opened: list[str] = []  # the servers this process has sessions on (what connect_failure names)


class SparkConnectUnreachable(RuntimeError):
    """The Spark Connect server could not be reached, or went away mid-query: a retry on a fresh session may pass."""

    def __init__(self, url: str, reason: str):
        self.url, self.reason = url, reason
        super().__init__(f"Spark Connect server {url} {reason}")

    def __reduce__(self):  # picklable with its fields (a process pool re-raises it in its parent)
        return (type(self), (self.url, self.reason))


def is_connect_master(master: str) -> bool:
    return master.startswith(CONNECT_SCHEME)


def server_url(master: str) -> str:
    """``sc://host:port`` of a Connect master, without its parameters (a token is never printed)."""
    host, port = connect_address(master)
    return f"{CONNECT_SCHEME}{host}:{port}"


def connect_address(master: str) -> tuple[str, int]:
    """``(host, port)`` of ``sc://host[:port][/;param=value...]`` (port 15002 when absent)."""
    parts = urlsplit(master.split("/;", 1)[0])
    if parts.scheme != "sc" or not parts.hostname:
        raise ValueError(f"not a Spark Connect URL (sc://host:port): {master!r}")
    return parts.hostname, parts.port or DEFAULT_PORT


def check_connect_server(master: str) -> None:
    """Connect to the server's gRPC port before a session is built; ``SparkConnectUnreachable`` naming it if not."""
    from mltrain_assets.workloads.common.spark import reach_any

    host, port = connect_address(master)
    attempts = CONNECT_ATTEMPTS
    unreachable = reach_any([(host, port)], attempts, CONNECT_TIMEOUT_S, CONNECT_RETRY_DELAY_S)
    if unreachable:
        reason, elapsed_s = unreachable
        why = reason.removeprefix(f"{host}:{port}: ").lower()
        raise SparkConnectUnreachable(
            server_url(master), f"is not reachable ({why}) after {attempts} attempts over {elapsed_s:.0f} s"
        )


def connect_session(settings: SparkSettings, shuffle_partitions: int) -> tuple[Any, bool]:
    """``(session, owned)`` on the server ``settings.master`` names, with the workload's runtime SQL settings.

    Settings the server refuses per session (static or core ones in ``MLTRAIN_SPARK_CONF``) are its own
    configuration: they are left to it, and listed in the session's ``mltrain.spark.server_conf`` entry.
    """
    from pyspark.sql import SparkSession
    from pyspark.sql.connect.client.retries import DefaultPolicy
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    check_connect_server(settings.master)
    url = server_url(settings.master)
    _opened.append(url)
    reused = ConnectSession.getActiveSession() is not None  # a caller's (tests): left open
    try:
        # The classic builder with remote() also switches pyspark's functions and ml to their Connect versions.
        session = SparkSession.builder.remote(settings.master).getOrCreate()
        session.client.set_retry_policies([DefaultPolicy(**RETRY_POLICY)])
        wanted = {
            "spark.sql.shuffle.partitions": str(shuffle_partitions),
            "spark.sql.session.timeZone": "UTC",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            **settings.conf,
        }
        left_to_server = []
        for key, value in wanted.items():
            if not key.startswith("spark.sql.") or not session.conf.isModifiable(key):
                left_to_server.append(key)
                continue
            session.conf.set(key, value)
        session.conf.set("mltrain.spark.server_conf", ",".join(sorted(left_to_server)))
    except Exception as exc:
        lost = connect_failure(exc)
        if lost is None or lost is exc:
            raise
        raise lost from exc
    return session, not reused


def is_connect_session(spark: Any) -> bool:
    """Whether ``spark`` is a Spark Connect session (no SparkContext, RDDs or JVM here)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def connect_failure(exc: BaseException) -> SparkConnectUnreachable | None:
    """``exc`` (or what caused it) as ``SparkConnectUnreachable`` when it says the server went away; else None."""
    if not _opened:
        return None
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, SparkConnectUnreachable):  # already named (e.g. a later session's reachability check)
            return error
        reason = _lost_reason(error)
        if reason:
            return SparkConnectUnreachable(_opened[-1], f"went away mid-query ({reason})")
        error = error.__cause__ or error.__context__
    return None


def _lost_reason(error: BaseException) -> str:
    code = getattr(error, "getGrpcStatusCode", None) or getattr(error, "code", None)
    status = getattr(code() if callable(code) else None, "name", "")
    condition = getattr(error, "getCondition", lambda: None)() or ""
    text = str(error)
    if condition in _LOST_CONDITIONS or any(marker in text for marker in _LOST_MARKERS):
        marker = next((m for m in _LOST_MARKERS if m in text), condition)
        return f"{marker}: the server restarted or dropped this session"
    if status in _LOST_GRPC_CODES and type(error).__module__.startswith(("pyspark", "grpc")):
        return f"gRPC {status} through the client's retries: {text.splitlines()[0][:200] if text else status}"
    return ""
