"""The one Spark session builder every Spark workload uses, configured by ``SparkSettings``.

``SparkSettings`` travels inside the workload's params (never through the environment),
so a pod runs with exactly the master and conf the control plane chose. pyspark is
imported lazily: the control plane imports this module for the settings class only.

Logging: the driver JVM logs with ``LOG4J2_PROPERTIES`` (written next to the logs): the console
(the workload's stderr, i.e. the demo, the Dagster run log, ``kubectl logs``) gets ERROR and
above only; everything from INFO up goes to one rolling file per session under
``$MLTRAIN_HOME/logs/spark/`` (``<app>-<UTC time>-<pid>.log``). Spark's "Setting default log
level" banner and the py4j chatter are gone with it. A deployment that brings its own log4j2
configuration sets ``spark.driver.extraJavaOptions`` with ``-Dlog4j2.configurationFile=...`` in
``MLTRAIN_SPARK_CONF``, which is then left alone.

Bounded wait on a standalone master (``spark://host:port[,host:port]``): Spark's client retries its
registration with a fixed schedule (3 attempts, 20 s each, constants in ``StandaloneAppClient``, no
setting changes them) and then fails with "Cannot call methods on a stopped SparkContext", naming no
master: ~74 s measured here. ``check_master`` connects to the master's port first (a few attempts,
seconds) and fails naming the URL; a master that accepts connections and then never registers the
application still fails after Spark's own ~60 s, as ``SparkMasterUnreachable`` naming it too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

LOOPBACK = "127.0.0.1"
LOG_DIR_ENV = "MLTRAIN_SPARK_LOG_DIR"
LOG_FILE_PROPERTY = "mltrain.spark.logFile"
# Session logs older than this are removed when a new session starts.
LOG_RETENTION_DAYS = 14

# log4j2 for the driver: console at ERROR, a rolling file at INFO (path from -Dmltrain.spark.logFile).
LOG4J2_PROPERTIES = f"""\
# Written by mltrain_assets/workloads/common/spark.py; edits are overwritten.
status = error
name = mltrain-spark

appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{{yy/MM/dd HH:mm:ss}} %p %c{{1}}: %m%n%ex
appender.console.filter.threshold.type = ThresholdFilter
appender.console.filter.threshold.level = error

appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = ${{sys:{LOG_FILE_PROPERTY}}}
appender.file.filePattern = ${{sys:{LOG_FILE_PROPERTY}}}.%i.gz
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{ISO8601}} %p %c: %m%n%ex
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 64MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 5

rootLogger.level = info
rootLogger.appenderRef.console.ref = console
rootLogger.appenderRef.file.ref = file

# PySpark's driver counts as Spark's interactive shell: unless the logger of its entry class has a
# level of its own, Spark lowers the root logger to WARN and prints "Setting default log level".
logger.pyspark.name = org.apache.spark.api.python.PythonGatewayServer
logger.pyspark.level = info

# Chatty at INFO without telling anything about the job.
logger.jetty.name = org.sparkproject.jetty
logger.jetty.level = warn
logger.parquet.name = org.apache.parquet
logger.parquet.level = warn
logger.codegen.name = org.apache.spark.sql.catalyst.expressions.codegen
logger.codegen.level = warn
"""


# Reaching a standalone master before the session starts: attempts, seconds per connect, pause between.
MASTER_CONNECT_ATTEMPTS = 4
MASTER_CONNECT_TIMEOUT_S = 5.0
MASTER_RETRY_DELAY_S = 1.0


class SparkCannotReach(ValueError):
    """Spark here cannot read a storage URI (``s3://`` without s3a): a setting to change, not a fault to retry."""


class SparkMasterUnreachable(RuntimeError):
    """The standalone master named by the settings could not be reached (or did not take the application)."""

    def __init__(self, master: str, attempts: int, elapsed_s: float, reason: str):
        self.master, self.attempts, self.elapsed_s, self.reason = master, attempts, elapsed_s, reason
        super().__init__(
            f"Spark master {master} unreachable after {attempts} attempts over {elapsed_s:.0f} s: {reason}"
        )

    def __reduce__(self):  # picklable with its fields (a process pool re-raises it in its parent)
        return (type(self), (self.master, self.attempts, self.elapsed_s, self.reason))


def master_addresses(master: str) -> list[tuple[str, int]]:
    """``[(host, port)]`` of a standalone master URL (``spark://h1:7077,h2:7077`` lists HA masters); else ``[]``."""
    if not master.startswith("spark://"):
        return []
    addresses = []
    for part in master.removeprefix("spark://").split(","):
        host, _, port = part.strip().rpartition(":")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def check_master(
    master: str,
    attempts: int = MASTER_CONNECT_ATTEMPTS,
    timeout_s: float = MASTER_CONNECT_TIMEOUT_S,
    delay_s: float = MASTER_RETRY_DELAY_S,
) -> None:
    """Connect to a standalone master's port (any of its HA masters) before a session is built.

    Refused connections fail in ``(attempts - 1) x delay_s`` (3 s); a black-holed address in
    ``attempts x timeout_s`` more (23 s). Raises ``SparkMasterUnreachable`` naming the URL; does
    nothing for other masters (``local[*]``, ``k8s://``).
    """
    addresses = master_addresses(master)
    if not addresses:
        return
    unreachable = reach_any(addresses, attempts, timeout_s, delay_s)
    if unreachable:
        reason, elapsed_s = unreachable
        raise SparkMasterUnreachable(master, attempts, elapsed_s, reason)


def reach_any(
    addresses: list[tuple[str, int]], attempts: int, timeout_s: float, delay_s: float
) -> tuple[str, float] | None:
    """None once any address accepts a connection (``attempts`` tries, ``delay_s`` apart); else (why, seconds spent)."""
    start = time.monotonic()
    try:
        for attempt in Retrying(
            stop=stop_after_attempt(attempts), wait=wait_fixed(delay_s), retry=retry_if_exception_type(OSError)
        ):
            with attempt:
                _connect_any(addresses, timeout_s)
    except RetryError as exhausted:
        return str(exhausted.last_attempt.exception()), time.monotonic() - start
    return None


def _connect_any(addresses: list[tuple[str, int]], timeout_s: float) -> None:
    """Return once any address accepts a connection; else an ``OSError`` naming why each refused."""
    reasons = []
    for host, port in addresses:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return
        except OSError as exc:
            reasons.append(f"{host}:{port}: {exc.strerror or exc}")
    raise OSError("; ".join(reasons))


@dataclasses.dataclass(frozen=True, kw_only=True)
class SparkSettings:
    """Where and how a Spark workload runs; none of it changes the output."""

    master: str = "local[*]"
    conf: dict[str, str] = dataclasses.field(default_factory=dict)  # extra spark.* settings
    s3a: bool = False  # the cluster has hadoop-aws: read s3:// inputs as s3a://
    driver_host: str = ""  # empty: $SPARK_DRIVER_HOST, else $SPARK_LOCAL_IP, else loopback
    log_dir: str = ""  # driver logs; empty: $MLTRAIN_SPARK_LOG_DIR, else $MLTRAIN_HOME/logs/spark
    # k8s:// masters: the pod Spark builds each executor on (the control plane renders it; see kubernetes_conf).
    executor_pod_template: dict[str, Any] = dataclasses.field(default_factory=dict)

    def resolved_driver_host(self) -> str:
        return self.driver_host or os.environ.get("SPARK_DRIVER_HOST") or os.environ.get("SPARK_LOCAL_IP") or LOOPBACK

    def resolved_log_dir(self) -> Path:
        if self.log_dir or os.environ.get(LOG_DIR_ENV):
            return Path(self.log_dir or os.environ[LOG_DIR_ENV]).expanduser()
        home = os.environ.get("MLTRAIN_HOME") or os.path.join(tempfile.gettempdir(), "mltrain")
        return Path(home).expanduser() / "logs" / "spark"


def driver_logging(settings: SparkSettings, app_name: str) -> tuple[dict[str, str], Path | None]:
    """``({spark conf}, log file)`` that route the driver's log4j2 output: ERROR to the console, INFO to a file.

    Nothing (``({}, None)``) when the deployment's conf names its own log4j2 configuration.
    """
    user_options = settings.conf.get("spark.driver.extraJavaOptions", "")
    if "log4j2.configurationFile" in user_options or "log4j.configurationFile" in user_options:
        return {}, None
    log_dir = settings.resolved_log_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    _prune_old_logs(log_dir)
    config = log_dir / "log4j2.properties"
    if not config.exists() or config.read_text() != LOG4J2_PROPERTIES:
        partial = config.with_name(f".{config.name}.{os.getpid()}")
        partial.write_text(LOG4J2_PROPERTIES)
        partial.replace(config)  # atomic: a concurrent session never reads half a file
    safe_app = "".join(c if c.isalnum() or c in "-_." else "_" for c in app_name)
    log_file = log_dir / f"{safe_app}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}.log"
    ours = f"-Dlog4j2.configurationFile={config.resolve().as_uri()} -D{LOG_FILE_PROPERTY}={log_file.resolve()}"
    return {"spark.driver.extraJavaOptions": f"{user_options} {ours}".strip()}, log_file


def _prune_old_logs(log_dir: Path) -> None:
    cutoff = time.time() - LOG_RETENTION_DAYS * 86400
    for path in log_dir.glob("*.log*"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            pass  # another session pruned it first


# The driver pod's own name (downward API metadata.name): executors are created owned by it, so they die with it.
DRIVER_POD_NAME_ENV = "SPARK_DRIVER_POD_NAME"
EXECUTOR_CONTAINER = "spark-executor"


def kubernetes_conf(settings: SparkSettings, scratch: Path | None = None) -> dict[str, str]:
    """What a driver in a pod adds for a ``k8s://`` master: its pod's name, and the executor pod template as a file.

    Spark reads the template from a local path; it is written under the scratch folder (the pod's
    /tmp emptyDir; the root file system is read-only). Nothing for other masters.
    """
    if not settings.master.startswith("k8s://"):
        return {}
    conf: dict[str, str] = {}
    if os.environ.get(DRIVER_POD_NAME_ENV):
        conf["spark.kubernetes.driver.pod.name"] = os.environ[DRIVER_POD_NAME_ENV]
    if settings.executor_pod_template:
        folder = scratch or Path(tempfile.gettempdir())
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"spark-executor-pod-{os.getpid()}.json"  # JSON is YAML: Spark's parser reads it
        path.write_text(json.dumps(settings.executor_pod_template))
        conf["spark.kubernetes.executor.podTemplateFile"] = str(path)
        conf["spark.kubernetes.executor.podTemplateContainerName"] = EXECUTOR_CONTAINER
    return conf


def spark_session(settings: SparkSettings, app_name: str, shuffle_partitions: int = 8) -> tuple[Any, bool]:
    """``(session, owned)``: the active session if the process has one (tests), else a new one.

    A new session binds its driver to the resolved driver host (loopback here, so traffic
    stays on this machine; the pod IP in a cluster), turns the UI off, uses UTC, and logs
    ERROR to the console and INFO to a file under the log dir (``driver_logging``). A
    standalone master is reached first (``check_master``): unreachable, it fails in seconds
    with ``SparkMasterUnreachable`` naming its URL, before a JVM starts. A ``sc://`` master makes it a
    Spark Connect client (``spark_connect.connect_session``): no JVM here, no driver logging.
    """
    from pyspark.sql import SparkSession

    from mltrain_assets.workloads.common.spark_connect import connect_session, is_connect_master

    if is_connect_master(settings.master):
        return connect_session(settings, shuffle_partitions)

    active = SparkSession.getActiveSession()
    if active is not None:
        active.conf.set("spark.sql.session.timeZone", "UTC")
        return active, False
    check_master(settings.master)
    os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
    logging.getLogger("py4j").setLevel(logging.WARNING)  # py4j logs every gateway call at INFO/DEBUG
    host = settings.resolved_driver_host()
    logging_conf, log_file = driver_logging(settings, app_name)  # a deployment's own log4j2 file is left alone
    builder = (
        SparkSession.builder.master(settings.master)
        .appName(app_name)
        .config("spark.driver.host", host)
        .config("spark.driver.bindAddress", host)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", "2g")
    )
    # The deployment's conf overrides the defaults above.
    for key, value in {**kubernetes_conf(settings), **settings.conf, **logging_conf}.items():
        builder = builder.config(key, value)
    start = time.monotonic()
    try:
        session = builder.getOrCreate()
    except Exception as exc:
        text = str(exc)
        if not master_addresses(settings.master) or "stopped SparkContext" not in text:
            raise
        # The port answered but no master registered the application: Spark gave up after its fixed
        # 3 x 20 s ("All masters are unresponsive! Giving up." in the driver log) and raised about a
        # stopped SparkContext.
        where = f"; driver log {log_file}" if log_file is not None else ""
        raise SparkMasterUnreachable(
            settings.master,
            3,
            time.monotonic() - start,
            f"its port accepts connections but no master registered the application (Spark's 3 registration "
            f"attempts of 20 s; 'All masters are unresponsive'){where}",
        ) from None
    if log_file is not None:
        session.conf.set("mltrain.spark.log_file", str(log_file))  # where to look, for the workload and tests
    return session, True


def spark_path(uri: str, settings: SparkSettings, workload: str) -> str:
    """The path Spark reads for ``uri``: ``file://`` as is, ``s3://`` as ``s3a://`` where the cluster can."""
    if uri.startswith("file://"):
        return uri
    if uri.startswith(("s3://", "s3a://")) and settings.s3a:
        return "s3a://" + uri.split("://", 1)[1]
    raise SparkCannotReach(
        f"{workload} reads its inputs with Spark, which here reads file:// paths only; got {uri}. "
        "Use the duckdb engine where the workload has one (reads s3:// through fsspec), or on a Spark "
        "cluster with hadoop-aws set MLTRAIN_SPARK_S3A=true to read it as s3a://."
    )
