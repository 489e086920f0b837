"""Hyperparameters are launch config: a workload asset's typed config defaults to today's values (today's version),
a tuned value plans a new version and reaches the workload, a value out of range is refused before any launch."""

import dataclasses
from pathlib import Path

import pytest
from dagster import AssetExecutionContext, AssetKey, materialize

from mltrain_assets.artifacts import read_manifest
from mltrain_assets.core.assets import Step, workload_asset
from mltrain_assets.core.launch_config import CODE_VERSION_SOURCE, check_config, config_class
from mltrain_assets.core.partitions import daily_partitions
from mltrain_assets.core.versions import version_of
from mltrain_assets.resources.deployments import LocalCompute
from mltrain_assets.resources.storage import ArtifactRefIOManagerFactory, ArtifactStorage
from mltrain_assets.workloads.common.params import hyperparameter, workload
from mltrain_assets_tests.pipelines.churn_plugin.spec import spec
from mltrain_assets_tests.resources.sample_workload import SampleParams

DATE = "2026-01-01"
SAMPLE = "mltrain_assets_tests.resources.sample_workload"


@workload(SAMPLE)
@dataclasses.dataclass(frozen=True, kw_only=True)
class TunedParams(SampleParams):
    """The sample workload, its committed score a hyperparameter."""

    score: float = hyperparameter(default=0.25, help="the score it commits", ge=0, le=1)
    rows: int = hyperparameter(default=3, help="rows of its table", ge=0)


LAUNCH_LOG = Path()  # set per test: where the sample workload appends a line per launch


@workload_asset(spec, TunedParams, layer="model", partitions_def=daily_partitions)
def tuned_step(context: AssetExecutionContext) -> Step:
    """A step whose workload has hyperparameters."""
    return Step(TunedParams(mode="commit", launch_log=str(LAUNCH_LOG)), inputs={"upstream": "up-1"})


class Runs:
    def __init__(self, tmp_path: Path):
        global LAUNCH_LOG
        LAUNCH_LOG = tmp_path / "launches.log"
        self.base = f"file://{tmp_path}/storage"
        self.store = tmp_path / "storage"

    def launches(self) -> int:
        return len(LAUNCH_LOG.read_text().splitlines()) if LAUNCH_LOG.exists() else 0

    def run(self, config: dict | None = None):
        return materialize(
            [tuned_step],
            partition_key=DATE,
            resources={
                "storage": ArtifactStorage(base_uri=self.base, landing_uri=f"{self.base}/landing"),
                "compute": LocalCompute(),
                "io_manager": ArtifactRefIOManagerFactory(base_uri=self.base),
            },
            run_config={"ops": {"tuned_step": {"config": config}}} if config is not None else None,
            raise_on_error=False,
        )


def _metadata(result) -> dict:
    (materialization,) = result.asset_materializations_for_node("tuned_step")
    return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}


def test_no_config_is_todays_version_and_a_tuned_value_is_a_new_one_the_workload_receives(tmp_path):
    runs = Runs(tmp_path)
    default = _metadata(runs.run())
    today = version_of(TunedParams.code_version, {"upstream": "up-1"}, TunedParams(mode="commit").versioned_fields())
    assert default["version"] == today and runs.launches() == 1
    assert read_manifest(default["uri"])["summary"]["score"] == 0.25

    # The defaults spelled out in the launchpad are the same launch: the committed version is reused.
    spelled = _metadata(runs.run({"score": 0.25, "rows": 3}))
    assert spelled["version"] == today and spelled["reused_committed_version"] is True and runs.launches() == 1

    tuned = _metadata(runs.run({"score": 0.75}))
    assert tuned["version"] != today and runs.launches() == 2
    assert tuned["version"] == version_of(
        TunedParams.code_version, {"upstream": "up-1"}, TunedParams(mode="commit", score=0.75).versioned_fields()
    )
    assert read_manifest(tuned["uri"])["summary"]["score"] == 0.75, "the tuned value reached the workload"


def test_a_value_out_of_range_is_refused_before_anything_is_launched(tmp_path):
    runs = Runs(tmp_path)
    result = runs.run({"score": 5.0})
    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    message = failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)
    assert "tuned_step: launch config refused: TunedParams.score=5.0 is out of range: must be >= 0, <= 1" in message
    assert runs.launches() == 0 and not list(runs.store.rglob("v=*")), "nothing launched, nothing committed"
    # Refused once: a config error is not retried (the data plane's retry policy would wait minutes).
    assert not [event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"]


def test_the_asset_shows_its_config_fields_defaults_and_code_version_source():
    fields = tuned_step.op.config_schema.config_type.fields
    assert set(fields) == {"score", "rows"}
    assert fields["score"].default_value == 0.25 and fields["rows"].default_value == 3
    assert fields["score"].description == "the score it commits (default 0.25; >= 0, <= 1)"
    key = AssetKey("tuned_step")
    assert tuned_step.code_versions_by_key[key] == TunedParams.code_version
    assert tuned_step.metadata_by_key[key][CODE_VERSION_SOURCE] == TunedParams.code_version_source()
    assert TunedParams.code_version_source().startswith("derived (src-")


def test_a_workload_without_hyperparameters_takes_no_config():
    assert config_class("plain", SampleParams) is None


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"score": 2}, "tuned_step: config score=2.0 is out of range: must be >= 0, <= 1"),
        ({"rows": "many"}, "tuned_step: config rows='many' refused: Input should be a valid integer"),
        ({"learning_rate": 0.1}, "tuned_step: unknown config field(s) ['learning_rate']; its hyperparameters: rows"),
    ],
)
def test_config_checked_before_a_run_names_the_asset_field_and_value(values, says):
    with pytest.raises(ValueError) as refused:
        check_config("tuned_step", TunedParams, values)
    assert str(refused.value).startswith(says)
