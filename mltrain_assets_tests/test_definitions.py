"""The code location loads the way the webserver and daemon load it, with every pipeline merged in."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_workspace_loads_in_dagsters_own_loader(mltrain_home):
    (mltrain_home / "dagster").mkdir(parents=True, exist_ok=True)
    # The loader refuses e.g. a second module-scope Definitions, which in-process imports don't notice.
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Validation successful for code location mltrain_assets" in result.stdout + result.stderr


def test_every_registered_pipeline_is_merged(mltrain_home):
    from mltrain_assets.core.pipeline import all_pipelines
    from mltrain_assets.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    for pipeline in all_pipelines():
        assert {pipeline.ingestion_asset, *pipeline.daily_assets, *pipeline.keyed_assets} <= keys
        assert defs.resolve_job_def(pipeline.ingestion_job).name == pipeline.ingestion_job
        for stage in pipeline.stages:
            assert defs.resolve_job_def(stage.job).name == stage.job
    sensors = {s.name for s in defs.sensors}
    assert {"rides_landing_sensor", "interactions_landing_sensor", "mltrain_automation_sensor"} <= sensors


def test_ui_launches_run_their_steps_in_the_run_worker(mltrain_home):
    """The implicit asset job (the UI's Materialize) runs in process: no step process importing the definitions again."""
    from mltrain_assets.definitions import defs

    repository = defs.get_repository_def()
    for job_name in repository.job_names:
        assert repository.get_job(job_name).executor_def.name == "in_process", job_name


def test_the_daemon_dequeues_within_a_second(tmp_path):
    """dagster.yaml's run queue settings reach Dagster's queued run coordinator (not its 5 s default)."""
    import shutil

    from dagster import DagsterInstance
    from dagster._core.run_coordinator import QueuedRunCoordinator

    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        assert coordinator.dequeue_interval_seconds == 1 and coordinator.dequeue_use_threads
