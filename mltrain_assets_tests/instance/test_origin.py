"""``LocationOriginInstance`` only adds an origin to in-process runs of this project's code.

Its effect on ``dg launch`` (the run re-executed through the UI's mutation) is tested end to end in
``mltrain_assets_tests/test_project_cli.py``.
"""

from __future__ import annotations

import yaml
from dagster import DagsterInstance, execute_job, job, op, reconstructable

from mltrain_assets.instance.origin import LocationOriginInstance

INSTANCE_CLASS = {"module": "mltrain_assets.instance.origin", "class": "LocationOriginInstance"}


@op
def noop() -> None:
    pass


@job
def other_code_job() -> None:
    noop()


def test_a_profile_naming_the_class_gives_it_and_leaves_runs_of_other_code_as_dagster_creates_them(tmp_path):
    (tmp_path / "dagster.yaml").write_text(
        yaml.safe_dump({"instance_class": INSTANCE_CLASS, "telemetry": {"enabled": False}})
    )
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance, LocationOriginInstance)
        result = execute_job(reconstructable(other_code_job), instance=instance)
        assert result.success
        run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.job_code_origin is not None
    assert run.remote_job_origin is None, "not mltrain_assets.definitions: no location origin invented"
