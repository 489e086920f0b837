"""``run_versioned_step``: version -> skip if committed -> launch -> reference.

The version hashes the asset's code version, its inputs' versions and the params' versioned
fields; where or how the workload runs (Spark master, SQL engine, MLflow) is not part of it.
"""

from pathlib import Path

from dagster import AssetExecutionContext, Config, asset, materialize

from mltrain_assets.artifacts import compute_version, read_manifest
from mltrain_assets.core.partitions import daily_partitions
from mltrain_assets.core.steps import run_versioned_step
from mltrain_assets.resources.compute import ComputeBackend
from mltrain_assets.resources.spark import SparkConfig
from mltrain_assets.resources.storage import ArtifactRefIOManagerFactory, ArtifactStorage
from mltrain_assets_tests.resources.sample_workload import SampleParams

DATE = "2026-01-01"
CODE_VERSION = "sample-step-1"


class StepConfig(Config):
    city: str = "nyc"
    upstream_version: str = "up-1"
    launch_log: str


@asset(partitions_def=daily_partitions, code_version=CODE_VERSION)
def sample_step(context: AssetExecutionContext, config: StepConfig, storage: ArtifactStorage, compute: ComputeBackend):
    yield from run_versioned_step(
        context,
        storage=storage,
        compute=compute,
        params=SampleParams(mode="commit", city=config.city, score=0.1, launch_log=config.launch_log),
        inputs={"upstream": config.upstream_version},
        timeout_s=60,
    )


class Step:
    """Materializes ``sample_step`` for DATE and says what happened."""

    def __init__(self, tmp_path: Path):
        self.base = f"file://{tmp_path}/storage"
        self.log = tmp_path / "launches.log"

    def launches(self) -> int:
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0

    def run(self, compute: ComputeBackend | None = None, **config) -> dict:
        result = materialize(
            [sample_step],
            partition_key=DATE,
            resources={
                "storage": ArtifactStorage(base_uri=self.base, landing_uri=f"{self.base}/landing"),
                "compute": compute or ComputeBackend(),
                "io_manager": ArtifactRefIOManagerFactory(base_uri=self.base),
            },
            run_config={"ops": {"sample_step": {"config": {"launch_log": str(self.log), **config}}}},
        )
        (materialization,) = result.asset_materializations_for_node("sample_step")
        return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}


def test_committed_version_is_reused_without_a_launch(tmp_path):
    step = Step(tmp_path)
    first = step.run()
    assert step.launches() == 1 and first["reused_committed_version"] is False
    expected = compute_version(
        CODE_VERSION, {"upstream": "up-1"}, SampleParams(mode="commit", city="nyc", score=0.1).versioned_fields()
    )
    assert first["version"] == expected
    assert first["uri"].endswith(f"/sample_step/{DATE}/v={expected}")
    assert read_manifest(first["uri"])["summary"] == {"city": "nyc", "score": 0.1}

    again = step.run()
    assert step.launches() == 1, "a committed version launches nothing"
    assert again["reused_committed_version"] is True and again["version"] == first["version"]
    assert again["score"] == 0.1, "the reference carries the committed summary"


def test_runtime_fields_do_not_change_the_version_and_versioned_fields_do(tmp_path):
    step = Step(tmp_path)
    first = step.run(ComputeBackend(spark=SparkConfig(master="local[2]"), sql_engine="spark"))
    elsewhere = ComputeBackend(
        spark=SparkConfig(master="spark://spark-master:7077"),
        sql_engine="duckdb",
        mlflow_tracking_uri="http://mlflow:5000",
    )
    moved = step.run(elsewhere)
    assert moved["version"] == first["version"] and moved["reused_committed_version"] is True
    assert step.launches() == 1

    other_city = step.run(elsewhere, city="sf")
    assert other_city["version"] != first["version"] and other_city["reused_committed_version"] is False
    new_input = step.run(upstream_version="up-2")
    assert new_input["version"] not in (first["version"], other_city["version"])
    assert step.launches() == 3


def test_versioned_fields_exclude_inputs_outputs_and_runtime():
    params = SampleParams(mode="commit", city="nyc", score=0.1, pid_file="/tmp/x", launch_log="/tmp/y")
    assert params.versioned_fields() == {"mode": "commit", "city": "nyc", "score": 0.1}
    local = ComputeBackend(spark=SparkConfig(master="local[2]"), sql_engine="spark").bind(params)
    cluster = ComputeBackend(
        spark=SparkConfig(master="spark://m:7077"), sql_engine="duckdb", mlflow_tracking_uri="http://m"
    ).bind(params.with_output("file:///out/v=1"))
    assert cluster.spark.master == "spark://m:7077" and cluster.engine == "duckdb" and local.engine == "spark"
    assert local.versioned_fields() == cluster.versioned_fields() == params.versioned_fields()
    assert SampleParams(mode="commit", city="sf", score=0.1).versioned_fields() != params.versioned_fields()
