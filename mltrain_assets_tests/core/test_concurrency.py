"""Concurrency has one mechanism: op pools, which bind every run, however it was launched.

A run-level tag limit only binds runs that carry the tag, and runs launched by declarative
automation, sensors, backfills or the UI's asset graph carry none. The assets declare
``pool="spark"`` / ``pool="training"``, so every run that executes them takes pool slots. These
tests use a real instance built from the repository's ``dagster.yaml`` (no daemon, no run worker).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterInstance
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.instance.config import ConcurrencyConfig, PoolGranularity, dagster_instance_config
from dagster._core.test_utils import create_run_for_test

REPO = Path(__file__).resolve().parents[2]
POOLS = {
    "city_demand_features": "spark",
    "interaction_embeddings": "spark",
    "city_demand_model": "training",
    "recommender_model": "training",
}


@pytest.fixture
def instance(tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    instance = DagsterInstance.from_config(str(home))
    try:
        yield instance
    finally:
        instance.dispose()


def test_local_instance_limits_pools_not_tags(instance: DagsterInstance):
    config = instance.get_concurrency_config()
    assert config.pool_config.default_pool_limit == 2
    assert config.pool_config.pool_granularity == PoolGranularity.OP
    assert config.run_queue_config is not None
    assert config.run_queue_config.max_concurrent_runs == 2
    # No tag limit that would look like it covers training runs while binding only some of them.
    assert not config.run_queue_config.tag_concurrency_limits
    # A run whose steps cannot get a pool slot waits in the queue instead of occupying a worker.
    assert config.run_queue_config.should_block_op_concurrency_limited_runs
    # Slots of runs that ended (a killed run worker included, once monitoring fails it) are freed.
    assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0


def test_postgres_profile_limits_pools_not_tags(tmp_path: Path):
    home = tmp_path / "pg_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.postgres.yaml", home / "dagster.yaml")
    # Dagster's own validation of the file (it refuses run limits set in two places).
    config, _ = dagster_instance_config(str(home))
    concurrency = ConcurrencyConfig.from_concurrency_settings(config["concurrency"], None)
    assert concurrency.pool_config.default_pool_limit == 4
    assert concurrency.pool_config.pool_granularity == PoolGranularity.OP
    assert "tag_concurrency_limits" not in config["concurrency"].get("runs", {})
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0


def test_runs_launched_by_automation_and_backfills_execute_pooled_steps(mltrain_home, instance: DagsterInstance):
    """Automation, sensors' asset requests and asset backfills run the implicit asset job on an
    asset selection: such a run has no job tags, and its steps still carry their pools."""
    from mltrain_assets.definitions import defs

    asset_job = defs.resolve_implicit_global_asset_job_def()
    for asset, pool in POOLS.items():
        selection = frozenset({AssetKey(asset)})
        job = asset_job.get_subset(asset_selection=selection)
        run = instance.create_run_for_job(
            job_def=job, execution_plan=create_execution_plan(job), asset_selection=selection
        )
        assert "mltrain/workload" not in run.tags  # a tag limit would never have seen this run
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        steps = [(step.key, step.pool) for step in plan.steps]
        # Beside the asset's step: only its per-key freshness check, a database read that takes no pool.
        assert steps[0] == (asset, pool) and all(k == f"{asset}_city_fresh" and p is None for k, p in steps[1:]), steps


def test_pipeline_jobs_execute_pooled_steps_too(mltrain_home, instance: DagsterInstance):
    from mltrain_assets.definitions import defs

    for job_name in ("demand_city_model_job", "recommender_job"):
        job = defs.resolve_job_def(job_name)
        run = instance.create_run_for_job(job_def=job, execution_plan=create_execution_plan(job))
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        pools = {step.key: step.pool for step in plan.steps}
        assert {k: v for k, v in pools.items() if k in POOLS} == {k: v for k, v in POOLS.items() if k in pools}
        assert "training" in pools.values()


def test_pool_limit_blocks_the_third_training_step(instance: DagsterInstance):
    """The run worker's claim path: two training steps run, a third (in any run) waits for a slot."""
    runs = [create_run_for_test(instance, job_name="__ASSET_JOB") for _ in range(3)]
    contexts = [InstanceConcurrencyContext(instance, run) for run in runs]
    with contexts[0] as a, contexts[1] as b, contexts[2] as c:
        assert a.claim("training", "recommender_model")
        assert b.claim("training", "city_demand_model")
        assert not c.claim("training", "city_demand_model")
        info = instance.event_log_storage.get_concurrency_info("training")
        assert info.slot_count == 2 and info.active_slot_count == 2 and info.pending_step_count == 1
        # The spark pool has its own slots: training does not starve feature builds.
        assert c.claim("spark", "city_demand_features")
        a.free_step("recommender_model")
        # The waiting step gets the freed slot (a fresh context skips the back-off c would sleep through).
        assert InstanceConcurrencyContext(instance, runs[2]).claim("training", "city_demand_model")


def test_instance_files_set_no_run_tag_limits():
    for path in (REPO / "dagster.yaml", REPO / "deploy" / "dagster.postgres.yaml"):
        config = yaml.safe_load(path.read_text())
        assert "tag_concurrency_limits" not in config["concurrency"].get("runs", {}), path
        assert config["concurrency"]["pools"]["granularity"] == "op", path
        assert "config" not in config.get("run_coordinator", {}), path
