"""Spark settings travel in the params: the driver host they resolve to, the paths Spark reads, where the driver logs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mltrain_assets.loopback import free_port
from mltrain_assets.workloads.common.spark import (
    LOG4J2_PROPERTIES,
    LOG_FILE_PROPERTY,
    LOG_RETENTION_DAYS,
    LOOPBACK,
    MASTER_RETRY_DELAY_S,
    SparkMasterUnreachable,
    SparkSettings,
    check_master,
    driver_logging,
    master_addresses,
    spark_path,
    spark_session,
)


@pytest.fixture
def no_host_env(monkeypatch):
    monkeypatch.delenv("SPARK_DRIVER_HOST", raising=False)
    monkeypatch.delenv("SPARK_LOCAL_IP", raising=False)
    return monkeypatch


def test_the_driver_host_defaults_to_loopback(no_host_env):
    assert SparkSettings().resolved_driver_host() == LOOPBACK == "127.0.0.1"


def test_the_pod_ip_is_used_when_the_pod_sets_one(no_host_env):
    no_host_env.setenv("SPARK_LOCAL_IP", "10.0.0.7")
    assert SparkSettings().resolved_driver_host() == "10.0.0.7"
    no_host_env.setenv("SPARK_DRIVER_HOST", "10.0.0.8")  # the explicit driver host wins over the local IP
    assert SparkSettings().resolved_driver_host() == "10.0.0.8"


def test_an_explicit_driver_host_wins_over_the_environment(no_host_env):
    no_host_env.setenv("SPARK_DRIVER_HOST", "10.0.0.8")
    no_host_env.setenv("SPARK_LOCAL_IP", "10.0.0.7")
    assert SparkSettings(driver_host="driver.svc").resolved_driver_host() == "driver.svc"


def test_file_uris_are_read_as_they_are():
    uri = "file:///data/ride_events/2026-03-10/v=a/events.parquet"
    assert spark_path(uri, SparkSettings(), "features") == uri
    assert spark_path(uri, SparkSettings(s3a=True), "features") == uri


def test_s3_uris_are_read_as_s3a_where_the_cluster_has_the_connector():
    settings = SparkSettings(s3a=True)
    assert spark_path("s3://mltrain/ride_events/x/events.parquet", settings, "f") == (
        "s3a://mltrain/ride_events/x/events.parquet"
    )
    assert spark_path("s3a://mltrain/x/events.parquet", settings, "f") == "s3a://mltrain/x/events.parquet"


@pytest.mark.parametrize("uri", ["s3://mltrain/ride_events/x/events.parquet", "s3a://mltrain/x/events.parquet"])
def test_s3_uris_without_the_connector_are_refused_pointing_to_duckdb(uri):
    with pytest.raises(ValueError, match="duckdb engine") as refused:
        spark_path(uri, SparkSettings(s3a=False), "the demand features workload")
    message = str(refused.value)
    assert uri in message and message.startswith("the demand features workload reads its inputs with Spark")


def test_other_schemes_are_refused_even_with_the_connector():
    with pytest.raises(ValueError, match=r"gs://bucket/x\.parquet"):
        spark_path("gs://bucket/x.parquet", SparkSettings(s3a=True), "features")


@pytest.mark.slow
def test_a_new_session_follows_the_settings(no_host_env, tmp_path):
    no_host_env.setenv("MLTRAIN_SPARK_LOG_DIR", str(tmp_path))
    from pyspark.sql import SparkSession

    if SparkSession.getActiveSession() is not None:
        pytest.skip("another test's Spark session is active; spark_session would reuse it")
    settings = SparkSettings(master="local[1]", conf={"spark.sql.shuffle.partitions": "3"})
    session, owned = spark_session(settings, "mltrain-test-settings", shuffle_partitions=8)
    try:
        assert owned
        conf = session.sparkContext.getConf()
        assert conf.get("spark.master") == "local[1]" and conf.get("spark.app.name") == "mltrain-test-settings"
        assert conf.get("spark.driver.host") == LOOPBACK and conf.get("spark.ui.enabled") == "false"
        assert session.conf.get("spark.sql.shuffle.partitions") == "3"  # the deployment's conf wins
        assert session.conf.get("spark.sql.session.timeZone") == "UTC"
        again, owned_again = spark_session(SparkSettings(master="local[2]"), "other")
        assert again is session and not owned_again  # the active session is reused
    finally:
        session.stop()


def test_driver_logging_sends_info_to_a_file_and_only_errors_to_the_console(tmp_path):
    conf, log_file = driver_logging(SparkSettings(log_dir=str(tmp_path / "logs")), "mltrain demand/features")
    config = tmp_path / "logs" / "log4j2.properties"
    assert config.read_text() == LOG4J2_PROPERTIES
    assert "appender.console.filter.threshold.level = error" in LOG4J2_PROPERTIES
    assert "rootLogger.level = info" in LOG4J2_PROPERTIES
    assert log_file.parent == tmp_path / "logs" and log_file.name.startswith("mltrain_demand_features-")
    options = conf["spark.driver.extraJavaOptions"]
    assert f"-Dlog4j2.configurationFile={config.resolve().as_uri()}" in options
    assert f"-D{LOG_FILE_PROPERTY}={log_file.resolve()}" in options


def test_the_log_dir_defaults_under_mltrain_home(monkeypatch, tmp_path):
    monkeypatch.delenv("MLTRAIN_SPARK_LOG_DIR", raising=False)
    monkeypatch.setenv("MLTRAIN_HOME", str(tmp_path))
    assert SparkSettings().resolved_log_dir() == tmp_path / "logs" / "spark"
    assert SparkSettings(log_dir="/var/log/x").resolved_log_dir() == Path("/var/log/x")


def test_the_deployments_java_options_are_kept_and_its_own_log4j_file_wins(tmp_path):
    settings = SparkSettings(log_dir=str(tmp_path), conf={"spark.driver.extraJavaOptions": "-XX:+UseG1GC"})
    conf, _ = driver_logging(settings, "app")
    assert conf["spark.driver.extraJavaOptions"].startswith("-XX:+UseG1GC -Dlog4j2.configurationFile=")
    own = SparkSettings(log_dir=str(tmp_path), conf={"spark.driver.extraJavaOptions": "-Dlog4j2.configurationFile=x"})
    assert driver_logging(own, "app") == ({}, None)


def test_old_session_logs_are_pruned(tmp_path):
    old, recent = tmp_path / "features-old.log", tmp_path / "features-new.log"
    for path in (old, recent):
        path.write_text("x")
    stale = time.time() - (LOG_RETENTION_DAYS + 1) * 86400
    os.utime(old, (stale, stale))
    driver_logging(SparkSettings(log_dir=str(tmp_path)), "app")
    assert not old.exists() and recent.exists()


SESSION_SCRIPT = """
import sys
from mltrain_assets.workloads.common.spark import SparkSettings, spark_session
session, owned = spark_session(SparkSettings(master="local[1]", log_dir=sys.argv[1]), "mltrain-test-logging")
assert owned
assert session.range(100).groupBy().count().collect()[0][0] == 100
print("LOG_FILE=" + session.conf.get("mltrain.spark.log_file"))
session.stop()
"""


@pytest.mark.slow
def test_a_session_from_the_builder_logs_info_to_its_file_and_nothing_to_the_console(tmp_path, no_host_env):
    """A fresh driver JVM (its own process: log4j2 is configured when the JVM starts) as a workload starts one."""
    done = subprocess.run(
        [sys.executable, "-c", SESSION_SCRIPT, str(tmp_path / "logs")],
        env={**os.environ, "SPARK_LOCAL_IP": LOOPBACK},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    log_file = Path(done.stdout.split("LOG_FILE=", 1)[1].strip())
    assert log_file.parent == tmp_path / "logs" and log_file.exists()
    logged = log_file.read_text()
    assert " INFO org.apache.spark.SparkContext: Running Spark version " in logged
    assert " INFO org.apache.spark.scheduler.DAGScheduler: Job 0 finished" in logged
    console = done.stderr
    for chatter in (" INFO ", " WARN ", "Setting default log level", "Using Spark's default log4j profile"):
        assert chatter not in console, f"{chatter!r} reached the console:\n{console}"


UNREACHABLE_SCRIPT = """
import sys
from mltrain_assets.workloads.common.spark import SparkSettings, spark_session
session, _ = spark_session(SparkSettings(master=sys.argv[1], log_dir=sys.argv[2]), "mltrain-test-unreachable")
session.read.parquet(sys.argv[2]).count()
"""


def test_an_unreachable_standalone_master_fails_in_seconds_naming_its_url(tmp_path, no_host_env):
    """Spark's own client gives up on a master after 3 x 20 s (~74 s measured), naming none: the check
    before the session fails in seconds with the URL. Its own process: no other test's session is reused."""
    master = f"spark://127.0.0.1:{free_port()}"  # nobody listens
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", UNREACHABLE_SCRIPT, master, str(tmp_path)],
        env={**os.environ, "SPARK_LOCAL_IP": LOOPBACK},
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - start
    assert done.returncode != 0
    assert elapsed < 20, elapsed
    assert f"SparkMasterUnreachable: Spark master {master} unreachable after 4 attempts over " in done.stderr
    assert "Connection refused" in done.stderr
    assert "Py4J" not in done.stderr, "no JVM was started"


def test_the_master_check_passes_a_listening_master_and_reads_ha_lists(monkeypatch):
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        dead = free_port()
        check_master(f"spark://127.0.0.1:{dead},127.0.0.1:{port}")  # one of the HA masters answers
        assert master_addresses("spark://a:7077,b:7078") == [("a", 7077), ("b", 7078)]
    for master in ("local[2]", "k8s://https://kubernetes.default.svc:443"):
        check_master(master)  # nothing to reach before the session
    sleeps = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    with pytest.raises(SparkMasterUnreachable, match=rf"spark://127\.0\.0\.1:{dead} unreachable after 4 attempts"):
        check_master(f"spark://127.0.0.1:{dead}")
    assert sleeps == [MASTER_RETRY_DELAY_S] * 3
