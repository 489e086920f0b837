"""The registry resource and the links between Dagster and MLflow: tag names, URL shapes, settings.

URL shapes were read off the UIs' own routes (Dagster 1.13: ``/runs/:runId``, an asset's
``?view=partitions&partition=<key>``; MLflow 3.17: ``#/experiments/:id/runs/:run``,
``#/models/:name/versions/:version``) and are followed in a real browser by the e2e test.
"""

from __future__ import annotations

import json
import os
import time

import mlflow
import mlflow.artifacts
import mlflow.pyfunc
import pytest
from mlflow.tracking import MlflowClient

from mltrain_assets.cli.devstack import DevStack
from mltrain_assets.loopback import free_port
from mltrain_assets.resources.registry_errors import AliasMoved, RegistryError, RegistryUnavailable
from mltrain_assets.resources.tracking import (
    LINEAGE_KEY_TAG,
    LINEAGE_TAGS,
    ModelRegistry,
    lineage_tags,
    run_artifact_path,
    snapshot_id,
)
from mltrain_assets.settings import apply_defaults
from mltrain_assets.workloads.common.params import MlflowSettings
from mltrain_assets.workloads.common.tracking import (
    HTTP_RETRY_DEFAULTS,
    HttpRetryBudget,
    TrackingServerUnavailable,
    bound_http_retries,
    dagster_asset_url,
    ensure_experiment,
    mlflow_model_version_url,
    mlflow_run_url,
    run_tags,
    use_tracking,
)

SNAPSHOT = {
    "city_demand_model": {
        "uri": "s3://mltrain/storage/city_demand_model/nyc/2026-11-27/v=0123456789ab",
        "version": "0123456789ab",
        "inputs": {
            f"ride_events/2026-11-{d:02d}": f"s3://mltrain/storage/ride_events/2026-11-{d:02d}" for d in range(1, 28)
        },
    }
}


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [0.5] * len(model_input)


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    experiment = MlflowClient(uri).create_experiment("links", artifact_location=f"file://{tmp_path}/artifacts")
    return uri, experiment


def test_lineage_tags_are_short_and_each_name_has_one_meaning():
    tags = lineage_tags(
        code_commit_sha="0123456789abcdef0123456789abcdef01234567",
        data_snapshot=SNAPSHOT,
        data_snapshot_uri="runs:/0123456789abcdef0123456789abcdef/lineage/data_snapshot-0123456789ab.json",
        run_id="7c4e0c3e-5d6a-4a57-9b3c-0e6f3f1f8a11",
        partition="nyc|2026-11-27",
        dagster_ui_url="http://127.0.0.1:3000/",
        asset_key="registered_demand_model",
    )
    assert tuple(tags) == LINEAGE_TAGS
    assert tags["mltrain.partition"] == "nyc|2026-11-27"  # the Dagster partition key, as Dagster writes it
    assert tags["mltrain.date"] == "2026-11-27"  # the date, whatever the partitioning
    assert tags["mltrain.data_snapshot_id"] == snapshot_id(SNAPSHOT) and len(snapshot_id(SNAPSHOT)) == 12
    assert tags["mltrain.dagster_run_url"] == "http://127.0.0.1:3000/runs/7c4e0c3e-5d6a-4a57-9b3c-0e6f3f1f8a11"
    assert tags["mltrain.dagster_asset_url"] == (
        "http://127.0.0.1:3000/assets/registered_demand_model?view=partitions&partition=nyc%7C2026-11-27"
    )
    assert len(json.dumps(SNAPSHOT)) > 1000 and max(len(v) for v in tags.values()) < 100
    # The id is a content hash: the same snapshot, in any key order, has the same id.
    assert snapshot_id(json.loads(json.dumps(SNAPSHOT, sort_keys=True))) == snapshot_id(SNAPSHOT)
    assert snapshot_id({**SNAPSHOT, "eval": {}}) != snapshot_id(SNAPSHOT)


def test_run_tags_link_a_workload_run_to_its_dagster_launch_and_stay_empty_standalone():
    assert run_tags(MlflowSettings(tracking_uri="sqlite:///x.db")) == {}
    settings = MlflowSettings(
        dagster_ui_url="https://dagster.example.com",
        dagster_run_id="r-1",
        dagster_asset_key="group/recommender_model",
        dagster_partition_key="2026-11-27",
    )
    assert run_tags(settings) == {
        "mltrain.partition": "2026-11-27",
        "mltrain.dagster_run_id": "r-1",
        "mltrain.dagster_run_url": "https://dagster.example.com/runs/r-1",
        "mltrain.dagster_asset_url": "https://dagster.example.com/assets/group/recommender_model"
        "?view=partitions&partition=2026-11-27",
    }
    assert dagster_asset_url("http://d:3000", "ride_events") == "http://d:3000/assets/ride_events"
    assert mlflow_run_url("http://m:5000/", "3", "abc") == "http://m:5000/#/experiments/3/runs/abc"
    assert mlflow_model_version_url("http://m:5000", "demand forecast/nyc", "7") == (
        "http://m:5000/#/models/demand%20forecast%2Fnyc/versions/7"
    )


def test_the_mlflow_ui_is_the_setting_else_the_tracking_server_else_the_environment(monkeypatch):
    monkeypatch.setenv("MLTRAIN_MLFLOW_UI_URL", "http://from-env:5000")
    monkeypatch.setenv("MLTRAIN_DAGSTER_UI_URL", "http://dagster-env:3000/")
    assert ModelRegistry(tracking_uri="sqlite:///x.db").mlflow_ui == "http://from-env:5000"
    assert ModelRegistry(tracking_uri="http://mlflow:5000/").mlflow_ui == "http://mlflow:5000"
    assert (
        ModelRegistry(tracking_uri="http://mlflow:5000", ui_url="https://ml.example/").mlflow_ui == "https://ml.example"
    )
    assert ModelRegistry(tracking_uri="sqlite:///x.db").dagster_ui == "http://dagster-env:3000"
    assert ModelRegistry(tracking_uri="x", dagster_ui_url="https://d.example").dagster_ui == "https://d.example"


def test_settings_default_to_the_local_uis_and_mltrain_dev_sets_the_ports_it_serves(tmp_path, monkeypatch):
    for name in ("MLTRAIN_MLFLOW_UI_URL", "MLTRAIN_DAGSTER_UI_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLTRAIN_HOME", str(tmp_path))
    effective = apply_defaults()
    assert effective["MLTRAIN_MLFLOW_UI_URL"] == "http://127.0.0.1:5000"
    assert effective["MLTRAIN_DAGSTER_UI_URL"] == "http://127.0.0.1:3000"
    monkeypatch.delenv("MLTRAIN_MLFLOW_UI_URL")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.com")
    assert apply_defaults()["MLTRAIN_MLFLOW_UI_URL"] == "https://mlflow.example.com"  # a server serves its UI

    assert DevStack(dagster_port=3100, mlflow_port=5100).link_settings() == {
        "MLTRAIN_DAGSTER_UI_URL": "http://127.0.0.1:3100",
        "MLTRAIN_MLFLOW_UI_URL": "http://127.0.0.1:5100",
    }
    assert DevStack(dagster_port=3100, mlflow_ui=False).link_settings() == {
        "MLTRAIN_DAGSTER_UI_URL": "http://127.0.0.1:3100"
    }


def test_a_run_uri_is_registered_as_the_model_the_run_logged_and_raw_artifacts_keep_their_uri(store, tmp_path):
    uri, experiment = store
    with mlflow.start_run(experiment_id=experiment) as logged:
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    (raw_dir / "config.json").write_text("{}")
    with mlflow.start_run(experiment_id=experiment) as raw:
        mlflow.log_artifacts(str(raw_dir), artifact_path="model")

    registry = ModelRegistry(tracking_uri=uri, ui_url="http://mlflow.example")
    assert registry.logged_model_uri(f"runs:/{logged.info.run_id}/model") == info.model_uri
    assert registry.logged_model_uri(f"runs:/{raw.info.run_id}/model") == f"runs:/{raw.info.run_id}/model"
    assert registry.logged_model_uri(info.model_uri) == info.model_uri

    first = registry.register(
        "linked", f"runs:/{logged.info.run_id}/model", logged.info.run_id, "k1", {"a": "b"}, description="**hi**"
    )
    version = registry.client.get_model_version("linked", first.version)
    # The version's source is the logged model itself (its page in the MLflow UI), not a run path.
    assert version.source == info.model_uri and version.description == "**hi**"
    assert (
        registry.version_link("linked", first.version)
        == f"http://mlflow.example/#/models/linked/versions/{first.version}"
    )
    assert (
        registry.run_link(logged.info.run_id)
        == f"http://mlflow.example/#/experiments/{experiment}/runs/{logged.info.run_id}"
    )


def test_the_full_snapshot_is_an_artifact_of_the_models_run(store):
    uri, experiment = store
    with mlflow.start_run(experiment_id=experiment) as run:
        pass
    registry = ModelRegistry(tracking_uri=uri)
    snapshot_uri = registry.record_snapshot(run.info.run_id, SNAPSHOT)
    assert snapshot_uri == f"runs:/{run.info.run_id}/lineage/data_snapshot-{snapshot_id(SNAPSHOT)}.json"
    assert len(snapshot_uri) < 100
    assert json.loads(mlflow.artifacts.load_text(snapshot_uri)) == SNAPSHOT
    assert run_artifact_path(snapshot_uri) == f"lineage/data_snapshot-{snapshot_id(SNAPSHOT)}.json"


# ---------------------------------------------------------------- bounded waits, one version per lineage


@pytest.fixture(scope="module")
def registry_store(tmp_path_factory):
    """One sqlite store for the registry tests below (a fresh store's migrations cost seconds); own model names."""
    return f"sqlite:///{tmp_path_factory.mktemp('registry')}/mlflow.db"


@pytest.fixture
def small_retry_budget(monkeypatch):
    """MLflow's own client retries, small: 3 attempts sleeping 0 then 2 s (the defaults: 5 attempts, ~30 s)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    return HttpRetryBudget.from_env()


def test_mlflows_own_retries_are_bounded_for_both_planes_unless_the_deployment_sets_them(monkeypatch):
    for name in HTTP_RETRY_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")  # a deployment's own value is kept
    budget = bound_http_retries()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "4" and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"
    assert budget.attempts == 5 and budget.timeout_s == 30
    defaults = HttpRetryBudget.from_env({})
    # Refused connections: only the backoff (0 + 4 + 8 + 16 s, plus jitter); MLflow's defaults sleep ~4 min.
    assert 28 <= defaults.backoff_s() <= 31
    assert HttpRetryBudget(7, 2, 1.0, 120).backoff_s() > 240
    # A server that accepts and never answers: every attempt times out.
    assert defaults.worst_case_s() <= 110

    # The workloads apply the same budget in their own process (a pod gets no control-plane environment).
    for name in HTTP_RETRY_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    use_tracking(MlflowSettings(tracking_uri="http://mlflow:5000"))
    assert {name: os.environ[name] for name in HTTP_RETRY_DEFAULTS} == HTTP_RETRY_DEFAULTS


def test_an_unreachable_tracking_server_fails_the_registry_within_the_budget_naming_it(small_retry_budget):
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens
    registry = ModelRegistry(tracking_uri=url)
    start = time.monotonic()
    with pytest.raises(RegistryUnavailable) as failed:
        registry.register("unreachable", "s3://b/model", None, "k1", {})
    elapsed = time.monotonic() - start
    assert elapsed < small_retry_budget.backoff_s() + 3, elapsed
    message = str(failed.value)
    assert message.startswith(f"MLflow tracking server {url} unreachable after 3 attempts over ")
    assert message.endswith("connection refused (searching versions of unreachable for lineage k1)")
    assert "Traceback" not in message and "HTTPConnectionPool" not in message
    assert failed.value.allow_retries is False  # the client already retried: the step fails once
    assert failed.value.metadata["url"].value == url
    with pytest.raises(RegistryUnavailable, match=r"unreachable after 3 attempts .* \(reading `staging` of m\)"):
        registry.alias_version("m", "staging")  # never "no alias"


def test_a_workload_fails_at_its_first_tracking_call_within_the_budget_naming_the_server(
    small_retry_budget, monkeypatch
):
    url = f"http://127.0.0.1:{free_port()}"
    use_tracking(MlflowSettings(tracking_uri=url))
    start = time.monotonic()
    with pytest.raises(TrackingServerUnavailable) as failed:
        ensure_experiment("unreachable")
    assert time.monotonic() - start < small_retry_budget.backoff_s() + 3
    assert str(failed.value).startswith(f"MLflow tracking server {url} unreachable after 3 attempts over ")
    assert "connection refused (selecting experiment 'unreachable')" in str(failed.value)


def test_a_lookup_that_errors_is_an_error_never_not_registered(registry_store, monkeypatch):
    uri = registry_store
    registry = ModelRegistry(tracking_uri=uri)
    from mlflow.exceptions import MlflowException

    def broken(*args, **kwargs):
        raise MlflowException("search failed: database is locked", error_code="INTERNAL_ERROR")

    monkeypatch.setattr(registry.client, "search_model_versions", broken)
    with pytest.raises(RegistryError, match="failed to look up versions of broken for lineage k1") as failed:
        registry.register("broken", "s3://b/model", None, "k1", {})
    assert uri in str(failed.value)
    assert failed.value.allow_retries is True  # a local store's error may pass; a server's answer would not
    monkeypatch.undo()
    assert MlflowClient(uri).search_registered_models("name = 'broken'") == [], "nothing registered"


def test_one_version_per_lineage_whatever_was_interrupted(registry_store):
    uri = registry_store
    registry = ModelRegistry(tracking_uri=uri)
    client = MlflowClient(uri)
    first = registry.register("lineage", "s3://b/model", None, "k1", {"a": "b"})
    again = registry.register("lineage", "s3://b/model", None, "k1", {"a": "b"})
    assert first.created and not again.created and again.version == first.version == "1"
    # The lineage tag is written with the version (one call): a version found later is never untagged.
    assert client.get_model_version("lineage", "1").tags[LINEAGE_KEY_TAG] == "k1"

    # A duplicate left by an earlier race (or a create the client retried): the oldest stays the lineage's.
    client.create_model_version("lineage", "s3://b/model", tags={LINEAGE_KEY_TAG: "k2"})  # v2
    client.create_model_version("lineage", "s3://b/model", tags={LINEAGE_KEY_TAG: "k2"})  # v3, a duplicate
    assert registry.register("lineage", "s3://b/model", None, "k2", {}).version == "2"
    client.create_model_version("lineage", "s3://b/model", tags={LINEAGE_KEY_TAG: "k3"})  # v4
    racing = registry.register("lineage", "s3://b/model", None, "k3", {})  # found: v4, no new one
    assert racing.version == "4" and not racing.created
    assert registry.settle_lineage("lineage", "k2") == "2"
    versions = {str(v.version): v.tags[LINEAGE_KEY_TAG] for v in client.search_model_versions("name = 'lineage'")}
    assert versions == {"1": "k1", "2": "k2", "4": "k3"}, "the duplicate v3 is gone"
    # A duplicate that an alias points at is left alone (someone serves it).
    client.create_model_version("lineage", "s3://b/model", tags={LINEAGE_KEY_TAG: "k1"})  # v5
    client.set_registered_model_alias("lineage", "staging", "5")
    assert registry.settle_lineage("lineage", "k1") == "1"
    assert client.get_model_version("lineage", "5").tags[LINEAGE_KEY_TAG] == "k1"


def test_compare_and_set_refuses_an_alias_that_moved_since_the_decision(registry_store):
    uri = registry_store
    registry = ModelRegistry(tracking_uri=uri)
    for key in ("k1", "k2", "k3"):
        registry.register("cas", "s3://b/model", None, key, {})
    assert registry.alias_version("cas", "staging") is None and registry.alias_version("nosuch", "staging") is None
    registry.compare_and_set_alias("cas", "staging", expected=None, new="1")
    registry.set_alias("cas", "staging", "2")  # another writer moves it after our decision read v1
    with pytest.raises(AliasMoved, match="`staging` of cas is v2, expected v1") as refused:
        registry.compare_and_set_alias("cas", "staging", expected="1", new="3")
    assert refused.value.actual == "2" and registry.alias_version("cas", "staging") == "2", "nothing written"
    registry.compare_and_set_alias("cas", "staging", expected="2", new="3")
    assert registry.alias_version("cas", "staging") == "3"
