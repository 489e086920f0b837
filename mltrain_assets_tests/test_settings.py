"""Every setting is checked when the definitions load: a bad value names the variable and what it accepts."""

import os
import subprocess
import sys

import pytest

from mltrain_assets.settings import (
    SettingsError,
    all_setting_rules,
    default_environment,
    settings_problems,
    validate_settings,
)

BAD_VALUES = {
    "MLTRAIN_SPARK_CONNECT": "remote",
    "MLTRAIN_ALERT_WEBHOOK_URL": "hooks.example.com/services/x",
    "MLTRAIN_ALERT_FORMAT": "teams",
    "MLTRAIN_ALERT_ATTEMPTS": "0",
    "MLTRAIN_LANDING_URI": "ftp://landing",
    "MLTRAIN_STORAGE_URI": "ftp://x",
    "MLTRAIN_MLFLOW_ARTIFACTS_URI": "relative/path",
    "MLFLOW_TRACKING_URI": "mlflow.example.com:5000",
    "MLTRAIN_MLFLOW_UI_URL": "127.0.0.1:5000",
    "MLTRAIN_DAGSTER_UI_URL": "localhost",
    "MLTRAIN_COMPUTE": "banana",
    "MLTRAIN_SPARK_MASTER": "spark://master",
    "MLTRAIN_SPARK_S3A": "yes",
    "MLTRAIN_SPARK_CONF": '{"executor.memory": "4g"}',
    "MLTRAIN_TRAIN_NODES": "0",
    "MLTRAIN_TRAIN_GPUS_PER_NODE": "eight",
    "MLTRAIN_SQL_ENGINE": "polars",
    "MLTRAIN_ENGINE_PARITY": "maybe",
    "MLTRAIN_AUTOMATION_LOOKBACK_DAYS": "0",
    "MLTRAIN_LANDING_SENSOR_INTERVAL_S": "30s",
    "MLTRAIN_K8S_IMAGE": "registry/mltrain latest",
    "MLTRAIN_WORKLOAD_RESOURCES": '{"training": {"memory": "lots"}}',
    "MLTRAIN_POOL_LIMITS": '{"registry": "one"}',
    "MLTRAIN_K8S_NAMESPACE": "ML_Train",
    "MLTRAIN_K8S_SERVICE_ACCOUNT": "Not A Name",
    "MLTRAIN_K8S_ENV_SECRET": "s3/creds",
    "MLTRAIN_K8S_NODE_SELECTOR": '["pool"]',
    "MLTRAIN_K8S_TRAINING_NODE_SELECTOR": '{"gpu": true}',
    "MLTRAIN_K8S_TRAINING_TOLERATIONS": '{"key": "nvidia.com/gpu"}',
    "MLTRAIN_K8S_UNSCHEDULABLE_TIMEOUT_S": "5m",
    "MLTRAIN_K8S_SPARK_SERVICE_ACCOUNT": "Spark Driver",
    "MLTRAIN_K8S_NODE_SIZES": '{"gpu": {"gpus": "8"}}',
    "MLTRAIN_CITIES": "nyc,paris",  # declared by the demand pipeline's spec
    "MLTRAIN_PIPELINES": "demand,my_company.missing.spec",
    "MLTRAIN_GIT_URL": "git@github.com:acme/mltrain.git",
    "MLTRAIN_PARTITIONS_START": "2026-02-30",
}


def _load_definitions(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Load the code location in a fresh process, as a code server does."""
    return subprocess.run(
        [sys.executable, "-c", "import mltrain_assets.definitions"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_rule_has_a_bad_value_here():
    assert set(BAD_VALUES) == set(all_setting_rules())


def test_the_embedded_defaults_are_usable(tmp_path, monkeypatch):
    monkeypatch.setenv("MLTRAIN_HOME", str(tmp_path))
    assert settings_problems(default_environment()) == []


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_a_bad_value_is_named_with_what_the_setting_accepts(name):
    (problem,) = settings_problems({name: BAD_VALUES[name]})
    assert problem == f"{name}={BAD_VALUES[name]!r}: expected {all_setting_rules()[name][1]}"


def test_good_values_pass():
    good = {
        "MLTRAIN_STORAGE_URI": "s3://mltrain-prod/artifacts",
        "MLFLOW_TRACKING_URI": "postgresql+psycopg2://u:p@db:5432/mlflow",
        "MLTRAIN_SPARK_MASTER": "k8s://https://kubernetes.default.svc:443",
        "MLTRAIN_SPARK_CONF": '{"spark.executor.instances": 4, "spark.executor.memory": "8g"}',
        "MLTRAIN_K8S_TRAINING_TOLERATIONS": '[{"key": "nvidia.com/gpu", "operator": "Exists"}]',
        "MLTRAIN_K8S_SERVICE_ACCOUNT": "",
        "MLTRAIN_CITIES": "nyc,sf",
    }
    assert settings_problems(good) == []
    for master in ("local", "local[2]", "local[*]", "spark://a:7077,b:7077", "yarn", "sc://spark-connect:15002"):
        assert settings_problems({"MLTRAIN_SPARK_MASTER": master}) == [], master


def test_every_bad_setting_is_reported_at_once():
    with pytest.raises(SettingsError) as refused:
        validate_settings({"MLTRAIN_STORAGE_URI": "ftp://x", "MLTRAIN_COMPUTE": "banana"})
    assert "MLTRAIN_STORAGE_URI='ftp://x'" in str(refused.value) and "MLTRAIN_COMPUTE='banana'" in str(refused.value)


def test_the_code_location_refuses_to_load_naming_the_variables(tmp_path):
    env = {
        **os.environ,
        "MLTRAIN_HOME": str(tmp_path),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "MLTRAIN_STORAGE_URI": "ftp://x",
        "MLTRAIN_COMPUTE": "banana",
    }
    result = _load_definitions(env)
    assert result.returncode != 0
    assert (
        "SettingsError: mltrain settings are not usable: MLTRAIN_STORAGE_URI='ftp://x': expected file:///absolute/path "
        "or s3://bucket[/prefix]; MLTRAIN_COMPUTE='banana': expected local, k8s or k8s-local"
    ) in result.stderr
    cli = subprocess.run(
        [sys.executable, "-m", "mltrain_assets.cli", "init"], env=env, capture_output=True, text=True, timeout=120
    )
    assert (
        cli.returncode != 0
        and "mltrain init: mltrain settings are not usable: MLTRAIN_STORAGE_URI='ftp://x'" in cli.stderr
    )


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"MLTRAIN_SQL_ENGINE": "spark"}, "MLTRAIN_SQL_ENGINE=spark with MLTRAIN_STORAGE_URI on s3://"),
        ({"MLTRAIN_SQL_ENGINE": "duckdb"}, "MLTRAIN_ENGINE_PARITY=true re-checks DuckDB's SQL on Spark"),
    ],
)
def test_spark_reading_s3_without_s3a_is_refused_at_load(settings, named):
    with pytest.raises(SettingsError, match=r"(needs|only with) MLTRAIN_SPARK_S3A=true") as refused:
        validate_settings({"MLTRAIN_STORAGE_URI": "s3://bucket/storage", **settings})
    assert named in str(refused.value)


def test_s3_storage_works_with_s3a_or_with_duckdb_alone():
    validate_settings({"MLTRAIN_STORAGE_URI": "s3://bucket/storage", "MLTRAIN_SPARK_S3A": "true"})
    validate_settings(
        {"MLTRAIN_STORAGE_URI": "s3://bucket/storage", "MLTRAIN_SQL_ENGINE": "duckdb", "MLTRAIN_ENGINE_PARITY": "false"}
    )


def test_production_settings_fail_loudly_at_load_naming_each_variable(tmp_path):
    """MLTRAIN_COMPUTE=k8s with nothing else set: no silent `mltrain:latest`, no file:// or sqlite:// in pods."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLTRAIN_", "MLFLOW_", "DAGSTER_"))}
    env.update({"MLTRAIN_HOME": str(tmp_path), "MLTRAIN_COMPUTE": "k8s"})
    result = _load_definitions(env)
    assert result.returncode != 0
    for name in ("MLTRAIN_STORAGE_URI", "MLTRAIN_LANDING_URI", "MLFLOW_TRACKING_URI", "MLTRAIN_K8S_NAMESPACE"):
        assert f"{name} is required with MLTRAIN_COMPUTE=k8s" in result.stderr, name
    assert "MLTRAIN_K8S_IMAGE is required with MLTRAIN_COMPUTE=k8s unless the code location runs from its image" in (
        result.stderr
    )


PRODUCTION = {
    "MLTRAIN_COMPUTE": "k8s",
    "MLTRAIN_STORAGE_URI": "s3://prod/storage",
    "MLTRAIN_LANDING_URI": "s3://prod/landing",
    "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    "MLTRAIN_K8S_NAMESPACE": "mltrain",
    "MLTRAIN_SPARK_S3A": "true",
}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"MLTRAIN_STORAGE_URI": "file:///data"}, "MLTRAIN_STORAGE_URI='file:///data' with MLTRAIN_COMPUTE=k8s"),
        ({"MLFLOW_TRACKING_URI": "sqlite:///m.db"}, "MLFLOW_TRACKING_URI='sqlite:///m.db' with MLTRAIN_COMPUTE=k8s"),
    ],
)
def test_production_refuses_one_machines_disk(change, named):
    with pytest.raises(SettingsError, match=r"each pod|lost") as refused:
        validate_settings({**PRODUCTION, "DAGSTER_CURRENT_IMAGE": "r/m@sha256:" + "0" * 64, **change})
    assert named in str(refused.value)


@pytest.mark.parametrize(
    "image_from",
    [
        {"MLTRAIN_K8S_IMAGE": "r/m@sha256:" + "0" * 64},
        {"DAGSTER_CURRENT_IMAGE": "r/m@sha256:" + "0" * 64},  # the code server, as the Helm chart runs it
        {"DAGSTER_RUN_JOB_NAME": "demand_job"},  # a run pod: the image its run recorded
    ],
)
def test_production_takes_the_image_from_one_place(image_from):
    validate_settings({**PRODUCTION, **image_from})


def test_embedded_defaults_are_not_production_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("MLTRAIN_HOME", str(tmp_path))
    monkeypatch.setenv("MLTRAIN_COMPUTE", "k8s")
    assert "MLTRAIN_STORAGE_URI" not in default_environment()
    monkeypatch.setenv("MLTRAIN_COMPUTE", "local")
    assert default_environment()["MLTRAIN_STORAGE_URI"] == f"file://{tmp_path}/storage"


def test_a_workload_resources_key_that_is_no_step_fails_the_load(tmp_path):
    env = {
        **os.environ,
        "MLTRAIN_HOME": str(tmp_path),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "MLTRAIN_WORKLOAD_RESOURCES": '{"recommender_modle": {"memory": "64Gi"}}',
    }
    result = _load_definitions(env)
    assert result.returncode != 0
    assert "MLTRAIN_WORKLOAD_RESOURCES: 'recommender_modle' is neither a profile" in result.stderr
