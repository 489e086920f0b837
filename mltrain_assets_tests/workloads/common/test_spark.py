"""Spark settings travel in the params: the driver host they resolve to, the paths Spark reads."""

from __future__ import annotations

import pytest

from mltrain_assets.workloads.common.spark import LOOPBACK, SparkSettings, spark_path, spark_session


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
def test_a_new_session_follows_the_settings(no_host_env):
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
