"""The one Spark session builder every Spark workload uses, configured by ``SparkSettings``.

``SparkSettings`` travels inside the workload's params (never through the environment),
so a pod runs with exactly the master and conf the control plane chose. pyspark is
imported lazily: the control plane imports this module for the settings class only.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

LOOPBACK = "127.0.0.1"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SparkSettings:
    """Where and how a Spark workload runs; none of it changes the output."""

    master: str = "local[*]"
    conf: dict[str, str] = dataclasses.field(default_factory=dict)  # extra spark.* settings
    s3a: bool = False  # the cluster has hadoop-aws: read s3:// inputs as s3a://
    driver_host: str = ""  # empty: $SPARK_DRIVER_HOST, else $SPARK_LOCAL_IP, else loopback

    def resolved_driver_host(self) -> str:
        return self.driver_host or os.environ.get("SPARK_DRIVER_HOST") or os.environ.get("SPARK_LOCAL_IP") or LOOPBACK


def spark_session(settings: SparkSettings, app_name: str, shuffle_partitions: int = 8) -> tuple[Any, bool]:
    """``(session, owned)``: the active session if the process has one (tests), else a new one.

    A new session binds its driver to the resolved driver host (loopback here, so traffic
    stays on this machine; the pod IP in a cluster), turns the UI off and uses UTC.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.conf.set("spark.sql.session.timeZone", "UTC")
        return active, False
    os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
    host = settings.resolved_driver_host()
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
    for key, value in settings.conf.items():  # the deployment's conf overrides the defaults above
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session, True


def spark_path(uri: str, settings: SparkSettings, workload: str) -> str:
    """The path Spark reads for ``uri``: ``file://`` as is, ``s3://`` as ``s3a://`` where the cluster can."""
    if uri.startswith("file://"):
        return uri
    if uri.startswith(("s3://", "s3a://")) and settings.s3a:
        return "s3a://" + uri.split("://", 1)[1]
    raise ValueError(
        f"{workload} reads its inputs with Spark, which here reads file:// paths only; got {uri}. "
        "Use the duckdb engine where the workload has one (reads s3:// through fsspec), or on a Spark "
        "cluster with hadoop-aws set MLTRAIN_SPARK_S3A=true to read it as s3a://."
    )
