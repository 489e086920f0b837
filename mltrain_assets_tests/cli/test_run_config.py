"""`mltrain materialize --config FILE`: the assets' hyperparameters as Dagster run config, checked before any run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dagster import AssetKey, validate_run_config

from mltrain_assets.cli import main
from mltrain_assets.cli import materialize as materialize_module
from mltrain_assets.cli.demo import RunOutcome

DAY = "2026-02-10"
REPO = Path(__file__).resolve().parents[2]
MODEL = ["materialize", "--asset", "city_demand_model", "--partition", f"nyc|{DAY}"]


@pytest.fixture
def launches(monkeypatch) -> list[dict]:
    """What `mltrain materialize` would launch: the selection and its run config (no run is executed)."""
    launched: list[dict] = []

    def launch(assets, *, partition=None, partition_range=None, run_config=None):
        launched.append({"assets": assets, "partition": partition, "run_config": run_config})
        return RunOutcome(label="test", run_id="r-1", success=True, seconds=0.0)

    monkeypatch.setattr(materialize_module, "materialize", launch)
    return launched


def test_the_config_file_reaches_the_run_as_dagster_run_config(mltrain_home, tmp_path, launches, capsys):
    config = tmp_path / "tuning.yaml"
    config.write_text("ops:\n  city_demand_model:\n    config:\n      learning_rate: 0.1\n      num_leaves: 31\n")
    assert main([*MODEL, "--config", str(config)]) == 0, capsys.readouterr().err
    ((launched),) = launches
    expected = {"ops": {"city_demand_model": {"config": {"learning_rate": 0.1, "num_leaves": 31}}}}
    assert launched["run_config"] == expected and launched["partition"] == f"nyc|{DAY}"
    # Dagster takes it for the asset's job, filling the hyperparameters it leaves out with their defaults.
    from mltrain_assets.definitions import defs

    job = defs.get_repository_def().get_implicit_job_def_for_assets([AssetKey("city_demand_model")])
    assert job is not None
    resolved = validate_run_config(job, launched["run_config"])["ops"]["city_demand_model"]["config"]
    assert resolved["learning_rate"] == 0.1 and resolved["num_leaves"] == 31 and resolved["num_boost_round"] == 400

    json_config = tmp_path / "tuning.json"
    json_config.write_text(json.dumps(expected))
    assert main([*MODEL, "--config", str(json_config)]) == 0
    assert launches[1]["run_config"] == expected

    assert main(MODEL) == 0 and launches[2]["run_config"] is None, "no --config: today's values"


@pytest.mark.parametrize(
    ("text", "argv", "says"),
    [
        (None, MODEL, "no such file"),
        ("ops: [unclosed", MODEL, "neither JSON nor YAML"),
        ('{"city_demand_model": {"learning_rate": 0.1}}', MODEL, 'expected {"ops": {"<asset>": {"config"'),
        ('{"ops": {"recommender_model": {"config": {"lr": 0.1}}}}', MODEL, "ops.recommender_model is not a selected"),
        ('{"ops": {"city_demand_model": {"learning_rate": 0.1}}}', MODEL, "ops.city_demand_model must be"),
        (
            '{"ops": {"city_demand_model": {"config": {"learning_rate": 5}}}}',
            MODEL,
            "city_demand_model: config learning_rate=5.0 is out of range: must be > 0, <= 1",
        ),
        (
            '{"ops": {"city_demand_model": {"config": {"lr": 0.1}}}}',
            MODEL,
            "city_demand_model: unknown config field(s) ['lr']; its hyperparameters: bagging_fraction, ",
        ),
        (
            '{"ops": {"city_demand_model": {"config": {"num_leaves": "many"}}}}',
            MODEL,
            "city_demand_model: config num_leaves='many' refused: Input should be a valid integer",
        ),
        (
            '{"ops": {"ride_events": {"config": {"x": 1}}}}',
            ["materialize", "--asset", "ride_events", "--partition", DAY],
            "ride_events takes no launch config (its workload declares no hyperparameters)",
        ),
    ],
)
def test_a_bad_config_file_is_refused_naming_the_problem_and_nothing_is_launched(
    mltrain_home, tmp_path, launches, capsys, text, argv, says
):
    config = tmp_path / "bad.yaml"
    if text is not None:
        config.write_text(text)
    assert main([*argv, "--config", str(config)]) == 2
    refused = capsys.readouterr().err
    assert refused.startswith(f"mltrain materialize: --config {config}: ") and refused.count("\n") == 1, refused
    assert says in refused
    assert launches == []


def test_the_shipped_seed_scale_config_is_accepted_for_the_recommender(mltrain_home, launches, capsys):
    from mltrain_assets.cli.run_config import load_run_config

    shipped = str(REPO / "deploy" / "config" / "recommender-seed-scale.yaml")
    config = load_run_config(shipped, ["recommender_model"])
    assert config == {"ops": {"recommender_model": {"config": {"epochs": 12, "hidden_width": 128}}}}
    args = ["materialize", "--asset", "recommender_model", "--partition", DAY, "--config", shipped]
    assert main(args) == 0, capsys.readouterr().err
    assert launches[0]["run_config"] == config
