"""Promotion decisions against a real local MLflow registry (sqlite), through a real Dagster context.

Register once per lineage; the first version becomes `staging`; a challenger moves `staging`
only if it beats or ties the champion; an older date never demotes a newer date's `staging`;
re-running a lineage replays its recorded decision and registers nothing. Every version links
to the Dagster run and asset partition that registered it, says in its description what data,
gate and decision made it, and the materialization links to the MLflow run and version.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import mlflow.artifacts
import mlflow.pyfunc
import pandas as pd
import pytest
from dagster import (
    AssetExecutionContext,
    Config,
    DagsterEventType,
    DagsterInstance,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    RetryPolicy,
    StaticPartitionsDefinition,
    UrlMetadataValue,
    asset,
    materialize,
)
from mlflow.tracking import MlflowClient

from mltrain_assets.artifacts import ArtifactRef
from mltrain_assets.core.gates import metric_above
from mltrain_assets.core.partitions import daily_partitions
from mltrain_assets.core.promotion import (
    COMPARISON_TAG,
    PROMOTED_TAG,
    REASON_TAG,
    SERVED_TAG,
    STAGING_ALIAS,
    register_and_promote,
)
from mltrain_assets.loopback import free_port
from mltrain_assets.resources.tracking import LINEAGE_KEY_TAG, LINEAGE_TAGS, REGISTRY_POOL, ModelRegistry

REPO = Path(__file__).resolve().parents[2]

MLFLOW_UI = "http://mlflow.example:5000"
DAGSTER_UI = "http://dagster.example:3000"
AUC_GATE = metric_above("auc_above_threshold", "auc", 0.6, "AUC on the held-out day > 0.6.")

EVAL_FRAME = pd.DataFrame({"x": [0.0, 1.0]})


class ConstantQuality(mlflow.pyfunc.PythonModel):
    """A model whose held-out AUC is a constant: evaluation loads the logged model and asks it."""

    def __init__(self, auc: float):
        self.auc = auc

    def predict(self, context, model_input, params=None):
        return [self.auc] * len(model_input)


def auc_of(model_uri: str) -> float:
    return float(mlflow.pyfunc.load_model(model_uri).predict(EVAL_FRAME)[0])


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """A sqlite tracking store (MLFLOW_TRACKING_URI) with three logged models: AUC 0.8, 0.7 and 0.9."""
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        uri = f"sqlite:///{root}/mlflow.db"
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLTRAIN_CODE_COMMIT", "0123456789abcdef")
        experiment = MlflowClient(uri).create_experiment("promotion", artifact_location=f"file://{root}/artifacts")
        models = {}
        for auc in (0.8, 0.7, 0.9):
            with mlflow.start_run(experiment_id=experiment) as run:
                mlflow.log_metric("auc", auc)
                info = mlflow.pyfunc.log_model(name="model", python_model=ConstantQuality(auc), pip_requirements=[])
            models[auc] = (run.info.run_id, info.model_uri)
        yield uri, models


class Candidate(Config):
    model_name: str
    run_id: str
    model_uri: str
    lineage: str  # the trained model's artifact version: one registration per lineage


def _snapshot(partition: str) -> dict:
    """A data snapshot as the assets build it: dozens of URIs, far too long for a tag."""
    return {
        "eval": {"uri": f"file:///eval/{partition}", "version": "e1"},
        "model": {
            "uri": f"file:///models/{partition}",
            "version": "m1",
            "inputs": {f"user_interactions/{k}": f"file:///storage/user_interactions/{k}/v=abc" for k in range(40)},
        },
    }


def _registry(uri: str) -> ModelRegistry:
    return ModelRegistry(tracking_uri=uri, ui_url=MLFLOW_UI, dagster_ui_url=DAGSTER_UI)


def _candidate_asset(
    comparisons: list,
    partitions_def=daily_partitions,
    *,
    during_comparison: list | None = None,
    spans: list | None = None,
    **asset_args,
):
    """``during_comparison``: callables run (once each) while the challenger is compared, as another
    writer would act; ``spans``: (start, end) of each execution of the body."""
    interference = list(during_comparison or [])

    @asset(partitions_def=partitions_def, name="registered_model", **asset_args)
    def registered_model(context: AssetExecutionContext, config: Candidate, registry: ModelRegistry):
        started = time.time()  # wall clock: spans are compared across processes
        if spans is not None:
            time.sleep(2.0)  # widen the window two unserialized registrations would share
        try:
            return _register(context, config, registry)
        finally:
            if spans is not None:
                spans.append((started, time.time()))

    def _register(context, config, registry):
        def compare_with_champion(champion_version: str):
            champion = auc_of(f"models:/{config.model_name}/{champion_version}")
            challenger = auc_of(config.model_uri)
            comparisons.append(champion_version)
            while interference:
                interference.pop(0)()
            return challenger >= champion, {
                "champion_version": champion_version,
                "champion_auc": champion,
                "challenger_auc": challenger,
            }

        auc = auc_of(config.model_uri)
        model_ref = ArtifactRef(
            "model",
            str(context.partition_key),
            config.lineage,
            f"file:///models/v={config.lineage}",
            {"mlflow_run_id": config.run_id, "auc": auc},
        )
        return register_and_promote(
            context,
            registry=registry,
            model_name=config.model_name,
            model_ref=model_ref,
            model_uri=config.model_uri,
            data_snapshot=_snapshot(str(context.partition_key)),
            score_metadata={"auc": auc},
            compare_with_champion=compare_with_champion,
            gate=AUC_GATE,
        )

    return registered_model


class Registry:
    """One registered model name in the shared store; ``promote`` materializes one candidate."""

    def __init__(self, tracking, name: str):
        self.uri, self.models = tracking
        self.name = name
        self.client = MlflowClient(self.uri)
        self.comparisons: list[str] = []

    def promote(
        self,
        date: str,
        auc: float,
        lineage: str,
        partitions_def=daily_partitions,
        partition_key=None,
        during_comparison: list | None = None,
    ) -> dict:
        run_id, model_uri = self.models[auc]
        config = {"model_name": self.name, "run_id": run_id, "model_uri": model_uri, "lineage": lineage}
        result = materialize(
            [_candidate_asset(self.comparisons, partitions_def, during_comparison=during_comparison)],
            partition_key=partition_key or date,
            resources={"registry": _registry(self.uri)},
            run_config={"ops": {"registered_model": {"config": config}}},
        )
        (materialization,) = result.asset_materializations_for_node("registered_model")
        self.raw_metadata = materialization.metadata
        return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()} | {"run_id": result.run_id}

    def version(self, version: str):
        return self.client.get_model_version(self.name, version)

    def staging(self) -> str:
        return str(self.client.get_model_version_by_alias(self.name, STAGING_ALIAS).version)

    def versions(self) -> int:
        return len(self.client.search_model_versions(f"name = '{self.name}'"))

    def tags(self, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(self.name, version).tags)


def test_first_version_becomes_staging_with_lineage(tracking):
    registry = Registry(tracking, "first")
    first = registry.promote("2026-01-01", 0.8, lineage="a1")
    assert first["registered_now"] is True and first["promoted_to_staging"] is True
    assert first["promotion_reason"] == "first `staging` version"
    assert registry.staging() == "1" and registry.versions() == 1
    tags = registry.tags("1")
    assert tags[PROMOTED_TAG] == "true" and tags[SERVED_TAG] == "1"
    assert tags[LINEAGE_KEY_TAG] == "a1" and tags["mltrain.partition"] == "2026-01-01"
    assert tags["mltrain.dagster_run_id"] == first["run_id"] and tags["mltrain.code_commit"] == "0123456789abcdef"
    assert tags["mltrain.metric.auc"] == "0.8"
    assert registry.comparisons == [], "no champion to compare with"


def test_losing_challenger_leaves_staging_and_records_the_comparison(tracking):
    registry = Registry(tracking, "loser")
    registry.promote("2026-01-01", 0.8, lineage="a1")
    lost = registry.promote("2026-01-02", 0.7, lineage="a2")
    assert lost["registered_now"] is True and lost["promoted_to_staging"] is False
    assert lost["promotion_reason"] == "champion wins against v1"
    assert lost["previous_staging_version"] == "1"
    assert registry.staging() == "1" and registry.versions() == 2
    tags = registry.tags("2")
    assert tags[PROMOTED_TAG] == "false" and tags[REASON_TAG] == "champion wins against v1"
    assert tags[SERVED_TAG] == "1", "the date is served by the champion it lost to"
    assert json.loads(tags[COMPARISON_TAG]) == {"champion_version": "1", "champion_auc": 0.8, "challenger_auc": 0.7}


def test_a_tie_promotes_the_challenger(tracking):
    registry = Registry(tracking, "tie")
    registry.promote("2026-01-01", 0.8, lineage="a1")
    tie = registry.promote("2026-01-02", 0.8, lineage="a2")
    assert tie["promoted_to_staging"] is True and tie["promotion_reason"] == "challenger wins against v1"
    assert registry.staging() == "2"
    assert json.loads(registry.tags("2")[COMPARISON_TAG])["champion_auc"] == 0.8


def test_an_older_date_never_demotes_a_newer_dates_staging(tracking):
    registry = Registry(tracking, "backfill")
    registry.promote("2026-01-05", 0.8, lineage="a5")
    backfilled = registry.promote("2026-01-03", 0.9, lineage="a3")  # better, but older
    assert backfilled["promoted_to_staging"] is False
    assert backfilled["promotion_reason"] == "`staging` is v1 for newer date 2026-01-05; a backfill does not demote it"
    assert registry.staging() == "1"
    assert registry.tags("2")[SERVED_TAG] == "1"
    assert registry.comparisons == [], "a newer date's staging is kept without evaluating anything"


def test_rerunning_a_lineage_replays_its_decision_and_registers_nothing(tracking):
    registry = Registry(tracking, "replay")
    registry.promote("2026-01-01", 0.8, lineage="a1")
    registry.promote("2026-01-02", 0.7, lineage="a2")  # loses
    registry.promote("2026-01-03", 0.9, lineage="a3")  # wins: staging -> v3
    assert registry.staging() == "3" and registry.comparisons == ["1", "1"]

    replay = registry.promote("2026-01-02", 0.7, lineage="a2")
    assert replay["registered_now"] is False and replay["model_version"] == 2
    assert replay["promoted_to_staging"] is False
    assert replay["promotion_reason"] == "champion wins against v1 (decided earlier; unchanged)"
    assert replay["champion_auc"] == 0.8 and replay["challenger_auc"] == 0.7
    first_again = registry.promote("2026-01-01", 0.8, lineage="a1")
    assert first_again["registered_now"] is False and first_again["promoted_to_staging"] is True
    assert first_again["promotion_reason"] == "first `staging` version (decided earlier; unchanged)"
    assert registry.versions() == 3, "no new version for a lineage already registered"
    assert registry.staging() == "3", "a replayed decision moves nothing"
    assert registry.comparisons == ["1", "1"], "nothing re-evaluated"
    assert registry.tags("2")[SERVED_TAG] == "1"


def test_a_version_links_to_dagster_and_describes_its_data_gate_and_decision(tracking):
    registry = Registry(tracking, "linked")
    first = registry.promote("2026-01-01", 0.8, lineage="a1")
    run_id, _ = registry.models[0.8]
    version = registry.version("1")
    tags = version.tags
    # One meaning per tag: the Dagster partition key, the date, the Dagster run and its pages.
    assert tags["mltrain.partition"] == "2026-01-01" and tags["mltrain.date"] == "2026-01-01"
    assert tags["mltrain.dagster_run_id"] == first["run_id"]
    assert tags["mltrain.dagster_run_url"] == f"{DAGSTER_UI}/runs/{first['run_id']}"
    assert (
        tags["mltrain.dagster_asset_url"]
        == f"{DAGSTER_UI}/assets/registered_model?view=partitions&partition=2026-01-01"
    )
    assert set(LINEAGE_TAGS) <= set(tags)

    # Lineage stays short: an id and a pointer; the full snapshot is an artifact of the model's run.
    assert all(len(tags[k]) < 100 for k in LINEAGE_TAGS), {k: len(tags[k]) for k in LINEAGE_TAGS}
    assert "mltrain.data_snapshot" not in tags
    snapshot_id = tags["mltrain.data_snapshot_id"]
    assert len(snapshot_id) == 12
    assert tags["mltrain.data_snapshot_uri"] == f"runs:/{run_id}/lineage/data_snapshot-{snapshot_id}.json"
    stored = json.loads(mlflow.artifacts.load_text(tags["mltrain.data_snapshot_uri"]))
    assert stored == _snapshot("2026-01-01")

    # The description says what data, which gate with its value vs threshold, which run, and the decision.
    description = version.description
    assert "**2026-01-01**" in description and f"`{tags['mltrain.data_snapshot_id']}`" in description
    assert "`auc_above_threshold` passed: observed auc = 0.8000 vs threshold 0.6" in description
    assert f"[{first['run_id'][:8]}]({DAGSTER_UI}/runs/{first['run_id']})" in description
    assert f"({MLFLOW_UI}/#/experiments/" in description and f"/runs/{run_id})" in description
    assert "**Promotion**: promoted to `staging` (first `staging` version)." in description

    # The materialization links to the MLflow run and the version.
    metadata = registry.raw_metadata
    assert isinstance(metadata["mlflow_run"], UrlMetadataValue)
    experiment_id = registry.client.get_run(run_id).info.experiment_id
    assert metadata["mlflow_run"].url == f"{MLFLOW_UI}/#/experiments/{experiment_id}/runs/{run_id}"
    assert isinstance(metadata["mlflow_model_version"], UrlMetadataValue)
    assert metadata["mlflow_model_version"].url == f"{MLFLOW_UI}/#/models/linked/versions/1"
    assert metadata["data_snapshot"].url == (
        f"{MLFLOW_UI}/#/experiments/{experiment_id}/runs/{run_id}/artifactPath/lineage/data_snapshot-{snapshot_id}.json"
    )

    lost = registry.promote("2026-01-02", 0.7, lineage="a2")
    assert lost["promoted_to_staging"] is False
    assert (
        "**Promotion**: not promoted; `staging` stays v1 (champion wins against v1). "
        "Compared: challenger_auc 0.7000; champion_auc 0.8000; champion_version 1." in registry.version("2").description
    )


def test_date_by_city_versions_carry_the_dagster_partition_key_and_the_date(tracking):
    partitions = MultiPartitionsDefinition(
        {"date": daily_partitions, "city": StaticPartitionsDefinition(["nyc", "sf"])}
    )
    registry = Registry(tracking, "by-city")
    key = MultiPartitionKey({"date": "2026-01-05", "city": "nyc"})
    registry.promote("2026-01-05", 0.8, lineage="c5", partitions_def=partitions, partition_key=key)
    tags = registry.tags("1")
    assert tags["mltrain.partition"] == "nyc|2026-01-05" and tags["mltrain.date"] == "2026-01-05"
    assert tags["mltrain.dagster_asset_url"].endswith(
        "/assets/registered_model?view=partitions&partition=nyc%7C2026-01-05"
    )
    # An older date never demotes it: the decision reads the `mltrain.date` tag.
    older = MultiPartitionKey({"date": "2026-01-03", "city": "nyc"})
    backfilled = registry.promote("2026-01-03", 0.9, lineage="c3", partitions_def=partitions, partition_key=older)
    assert backfilled["promoted_to_staging"] is False
    assert backfilled["promotion_reason"] == "`staging` is v1 for newer date 2026-01-05; a backfill does not demote it"


# ---------------------------------------------------------------- bounded waits, race-free promotion


def test_the_registration_assets_take_the_registry_pools_one_slot(mltrain_home):
    from mltrain_assets.definitions import defs

    for name in ("registered_demand_model", "registered_recommender"):
        assert defs.resolve_assets_def(name).op.pool == REGISTRY_POOL == "registry"


def test_an_unreachable_registry_fails_the_step_once_naming_the_server(tracking, monkeypatch):
    # MLflow's own retries, small here (3 attempts, 0 + 2 s); the defaults give ~30 s (resources/test_tracking.py).
    for name, value in {"MAX_RETRIES": "2", "BACKOFF_FACTOR": "1", "BACKOFF_JITTER": "0", "TIMEOUT": "5"}.items():
        monkeypatch.setenv(f"MLFLOW_HTTP_REQUEST_{name}", value)
    url = f"http://127.0.0.1:{free_port()}"
    _, models = tracking
    run_id, model_uri = models[0.8]
    config = {"model_name": "down", "run_id": run_id, "model_uri": model_uri, "lineage": "d1"}
    asset_def = _candidate_asset([], retry_policy=RetryPolicy(max_retries=3, delay=0))
    start = time.monotonic()
    result = materialize(
        [asset_def],
        partition_key="2026-01-01",
        resources={"registry": ModelRegistry(tracking_uri=url)},
        run_config={"ops": {"registered_model": {"config": config}}},
        raise_on_error=False,
    )
    assert time.monotonic() - start < 30
    assert not result.success
    (failure,) = result.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith(f"MLflow tracking server {url} unreachable after 3 attempts over ")
    assert "connection refused" in description
    retried = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert retried == [], "not stacked under the step's retry policy"


def test_staging_moves_only_by_compare_and_set_against_the_version_the_decision_read(tracking):
    """Another writer (outside the registry pool) moves `staging` while the challenger is compared:
    the set is refused and the decision is made again against the version it moved to."""
    registry = Registry(tracking, "cas")
    registry.promote("2026-01-01", 0.7, lineage="a1")  # v1 staging
    mlflow_registry = _registry(registry.uri)
    run_id, model_uri = registry.models[0.9]
    outside = mlflow_registry.register("cas", model_uri, run_id, "outside", {"mltrain.date": "2026-01-02"})  # v2

    def someone_moves_staging():
        registry.client.set_registered_model_alias("cas", STAGING_ALIAS, outside.version)

    challenger = registry.promote("2026-01-03", 0.8, lineage="a3", during_comparison=[someone_moves_staging])
    assert registry.comparisons == ["1", "2"], "decided again against the version staging moved to"
    assert challenger["promoted_to_staging"] is False
    assert challenger["promotion_reason"] == "champion wins against v2"
    assert registry.staging() == "2", "the challenger that only beat v1 did not overwrite v2"
    assert registry.tags("3")[SERVED_TAG] == "2"


def test_a_retry_after_a_crash_between_registering_and_deciding_finds_its_version(tracking):
    registry = Registry(tracking, "crashed")
    run_id, model_uri = registry.models[0.8]
    # The crashed attempt got as far as creating the version (its lineage tag is written with it).
    _registry(registry.uri).register("crashed", model_uri, run_id, "a1", {})
    retried = registry.promote("2026-01-01", 0.8, lineage="a1")
    assert retried["registered_now"] is False and retried["model_version"] == 1
    assert retried["promoted_to_staging"] is True and registry.staging() == "1"
    assert registry.versions() == 1 and registry.tags("1")[SERVED_TAG] == "1"


@pytest.fixture
def instance(tmp_path):
    """A real instance from the repository's dagster.yaml (pools with op granularity, default limit 2)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    with DagsterInstance.from_config(str(home)) as instance:
        yield instance


# One `mltrain materialize`-like launch: an in-process run on the instance in $DAGSTER_HOME (the body
# sleeps 2 s, wider than the two launches' skew); prints the body's (start, end) and registered_now.
LAUNCH = """
import json, os, sys, time
from pathlib import Path
from dagster import DagsterInstance, materialize
from mltrain_assets.resources.tracking import REGISTRY_POOL
from mltrain_assets_tests.core.test_promotion import _candidate_asset, _registry

config, ready, both = json.loads(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
spans = []
asset_def = _candidate_asset([], pool=REGISTRY_POOL, spans=spans)
ready.touch()
while len(list(both.glob("ready-*"))) < 2:  # both launch at the same moment: without the pool (and the
    time.sleep(0.05)  # claim guard, instance/slot_claims.py) their 2 s bodies would overlap
with DagsterInstance.get() as instance:
    result = materialize(
        [asset_def],
        instance=instance,
        partition_key="2026-01-01",
        resources={"registry": _registry(os.environ["MLFLOW_TRACKING_URI"])},
        run_config={"ops": {"registered_model": {"config": config}}},
    )
(materialization,) = result.asset_materializations_for_node("registered_model")
print("RESULT=" + json.dumps({"spans": spans, "registered_now": materialization.metadata["registered_now"].value}))
"""


def test_two_materializations_of_one_partition_at_once_register_one_version(tracking, instance, tmp_path):
    """UI + backfill, or two `mltrain materialize` runs (two processes, one instance): the registration
    steps take the registry pool's one slot (written by `mltrain init`, never by a run), so they run
    one after the other, and the second finds the first's version."""
    from mltrain_assets.instance.pools import apply_pool_limits
    from mltrain_assets.instance.slot_claims import guard_slot_claims

    assert guard_slot_claims(instance).installed
    apply_pool_limits(instance, {REGISTRY_POOL})
    registry = Registry(tracking, "twice")
    run_id, model_uri = registry.models[0.8]
    config = {"model_name": "twice", "run_id": run_id, "model_uri": model_uri, "lineage": "t1"}
    env = {**os.environ, "DAGSTER_HOME": instance.root_directory, "MLFLOW_TRACKING_URI": registry.uri}
    launches = [
        subprocess.Popen(
            [sys.executable, "-c", LAUNCH, json.dumps(config), str(tmp_path / f"ready-{i}"), str(tmp_path)],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [launch.communicate(timeout=240) for launch in launches]
    for launch, (_, stderr) in zip(launches, outputs, strict=True):
        assert launch.returncode == 0, stderr[-3000:]
    results = [json.loads(out.split("RESULT=", 1)[1]) for out, _ in outputs]
    (first, second) = sorted(span for result in results for span in result["spans"])
    assert first[1] <= second[0], f"the registration steps overlapped: {first} {second}"
    assert registry.versions() == 1 and registry.staging() == "1"
    assert sorted(r["registered_now"] for r in results) == [False, True], "the second replayed the first's decision"
    limit = next(p for p in instance.event_log_storage.get_pool_limits() if p.name == REGISTRY_POOL)
    assert limit.limit == 1 and not limit.from_default
