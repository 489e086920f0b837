"""Promotion decisions against a real local MLflow registry (sqlite), through a real Dagster context.

Register once per lineage; the first version becomes `staging`; a challenger moves `staging`
only if it beats or ties the champion; an older date never demotes a newer date's `staging`;
re-running a lineage replays its recorded decision and registers nothing.
"""

import json

import mlflow
import mlflow.pyfunc
import pandas as pd
import pytest
from dagster import AssetExecutionContext, Config, asset, materialize
from mlflow.tracking import MlflowClient

from mltrain_assets.artifacts import ArtifactRef
from mltrain_assets.core.partitions import daily_partitions
from mltrain_assets.core.promotion import (
    COMPARISON_TAG,
    PROMOTED_TAG,
    REASON_TAG,
    SERVED_TAG,
    STAGING_ALIAS,
    register_and_promote,
)
from mltrain_assets.resources.tracking import LINEAGE_KEY_TAG, ModelRegistry

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


def _candidate_asset(comparisons: list):
    @asset(partitions_def=daily_partitions, name="registered_model")
    def registered_model(context: AssetExecutionContext, config: Candidate, registry: ModelRegistry):
        def compare_with_champion(champion_version: str):
            champion = auc_of(f"models:/{config.model_name}/{champion_version}")
            challenger = auc_of(config.model_uri)
            comparisons.append(champion_version)
            return challenger >= champion, {
                "champion_version": champion_version,
                "champion_auc": champion,
                "challenger_auc": challenger,
            }

        model_ref = ArtifactRef(
            "model",
            context.partition_key,
            config.lineage,
            f"file:///models/v={config.lineage}",
            {"mlflow_run_id": config.run_id},
        )
        return register_and_promote(
            context,
            registry=registry,
            model_name=config.model_name,
            model_ref=model_ref,
            model_uri=config.model_uri,
            data_snapshot={"eval": {"uri": f"file:///eval/{context.partition_key}", "version": "e1"}},
            score_metadata={"auc": auc_of(config.model_uri)},
            compare_with_champion=compare_with_champion,
        )

    return registered_model


class Registry:
    """One registered model name in the shared store; ``promote`` materializes one candidate."""

    def __init__(self, tracking, name: str):
        self.uri, self.models = tracking
        self.name = name
        self.client = MlflowClient(self.uri)
        self.comparisons: list[str] = []

    def promote(self, date: str, auc: float, lineage: str) -> dict:
        run_id, model_uri = self.models[auc]
        config = {"model_name": self.name, "run_id": run_id, "model_uri": model_uri, "lineage": lineage}
        result = materialize(
            [_candidate_asset(self.comparisons)],
            partition_key=date,
            resources={"registry": ModelRegistry(tracking_uri=self.uri)},
            run_config={"ops": {"registered_model": {"config": config}}},
        )
        (materialization,) = result.asset_materializations_for_node("registered_model")
        return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()} | {"run_id": result.run_id}

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
