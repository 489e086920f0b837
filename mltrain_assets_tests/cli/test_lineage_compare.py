"""``mltrain reproduce`` compares what a rebuild produced, never how long or where it ran."""

from __future__ import annotations

import pytest

from mltrain_assets.cli import reproduce
from mltrain_assets.cli.reproduce import _same_summary, is_run_fact

# A summary as the workloads write them (recsys training, demand training, aggregates, embeddings).
SUMMARY = {
    "auc": 0.71,
    "epochs": 3,
    "skill_nats": 0.012,
    "no_skill_fallback": False,
    "user_stats": 3,
    "batch_size": 256,
    "world_size": 2,
    "nproc": 2,
    "rows": 1200,
    "scoring_rows": 24,
    "marker_sha256": "ab12",
    "weights_sha256": "cd34",
    "mape": 0.18,
    "top_features": ["lag_24h", "hour"],
    "date": "2026-01-05",
    # how long and where it ran
    "elapsed_s": 12.5,
    "timings_s": {"fit_s": 3.0},
    "compute_seconds": 4.2,
    "run_id": "r-1",
    "mlflow_run_id": "m-1",
    "mlflow_experiment_id": "1",
    "mlflow_model_id": "m-abc",
    "mlflow_model_uri": "models:/m-abc",
    "mlflow_run_model_uri": "runs:/m-1/model",
    "model_uri": "runs:/m-1/model",
    "model_artifact_uri": "runs:/m-1/model",
    "engine": "spark",
    "engine_parity": {"checked": True},
    "checkpointed": True,
}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("world_size", 4),
        ("no_skill_fallback", True),
        ("user_stats", 4),
        ("batch_size", 512),
        ("skill_nats", 0.5),
        ("scoring_rows", 25),
        ("marker_sha256", "ef56"),
        ("rows", 1201),
        ("auc", 0.72),
    ],
)
def test_a_key_that_describes_the_output_is_compared(key, value):
    again = {**SUMMARY, key: value}
    assert _same_summary(SUMMARY, again) == {key: (SUMMARY[key], value)}


def test_only_durations_run_ids_and_uris_differing_is_no_difference():
    again = {
        **SUMMARY,
        "elapsed_s": 99.0,
        "timings_s": {"fit_s": 50.0},
        "compute_seconds": 40.0,
        "run_id": "r-2",
        "mlflow_run_id": "m-2",
        "mlflow_experiment_id": "7",
        "mlflow_model_id": "m-def",
        "mlflow_model_uri": "models:/m-def",
        "mlflow_run_model_uri": "runs:/m-2/model",
        "model_uri": "runs:/m-2/model",
        "model_artifact_uri": "runs:/m-2/model",
        "engine": "duckdb",
        "engine_parity": {"checked": False, "why": "switched off"},
        "checkpointed": False,
    }
    assert _same_summary(SUMMARY, again) == {}


def test_run_facts_are_whole_words_or_a_duration_suffix():
    for key in ("elapsed_s", "compute_seconds", "seconds", "run_id", "dagster_run_id", "mlflow", "uri", "committed_at"):
        assert is_run_fact(key), key
    # A fact inside a word is not the fact: "_s" in world_size, "uri" in uris, "engine" in engineered.
    for key in ("world_size", "no_skill_fallback", "user_stats", "batch_size", "users_with_factors", "uris", "runs"):
        assert not is_run_fact(key), key
    assert not is_run_fact("engineered_features") and not is_run_fact("mlflowish")


def test_a_json_record_equal_but_for_its_run_facts_counts_as_the_same_file(monkeypatch):
    records = {
        "original": {"auc": 0.7, "world_size": 2, "mlflow_run_id": "m-1"},
        "again": {"auc": 0.7, "world_size": 2, "mlflow_run_id": "m-2"},
        "other": {"auc": 0.7, "world_size": 4, "mlflow_run_id": "m-3"},
    }
    monkeypatch.setattr(reproduce, "read_json", lambda uri, name: records[uri])
    assert reproduce._same_file("original", "again", "metrics.json", {"sha256": "1"}, {"sha256": "2"})
    assert not reproduce._same_file("original", "other", "metrics.json", {"sha256": "1"}, {"sha256": "3"})


def test_a_manifest_recorded_before_the_pipelines_moved_still_finds_its_params_class():
    from mltrain_assets.cli.lineage import params_class
    from mltrain_assets.pipelines.demand.params import TrainParams
    from mltrain_assets.pipelines.recsys.params import TrainParams as RecommenderTrainParams

    assert params_class("mltrain_assets.pipelines.demand.workloads.train") is TrainParams
    assert params_class("mltrain_assets.workloads.demand.train") is TrainParams
    assert params_class("mltrain_assets.workloads.recsys.train.launcher") is RecommenderTrainParams
    with pytest.raises(ValueError, match=r"no params class for workload mltrain_assets\.workloads\.demand\.nothing"):
        params_class("mltrain_assets.workloads.demand.nothing")
