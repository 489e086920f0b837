"""``run_versioned_step``: version -> skip if committed -> launch -> reference.

The version hashes the asset's code version, its inputs' versions and the params' versioned
fields; where or how the workload runs (Spark master, SQL engine, MLflow) is not part of it.
"""

import os
from pathlib import Path

from dagster import AssetExecutionContext, BackfillPolicy, Config, Output, asset, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from mltrain_assets.artifacts import ArtifactRef, compute_version, read_manifest
from mltrain_assets.core.partitions import daily_partitions
from mltrain_assets.core.steps import StepCost, build_versions, plan_version, run_versioned_step
from mltrain_assets.resources.compute import ComputeBackend, WorkloadResult
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


class CostConfig(Config):
    burn_s: float
    alloc_mb: int
    orphan_burn_s: float


# What the step reads: two committed versions (1,000 and 234 rows) and a model, which has no rows.
UPSTREAM = {
    "features": ArtifactRef("features", DATE, "f1", "file:///features", {"rows": 1_000}),
    "labels": ArtifactRef("labels", DATE, "l1", "file:///labels", {"rows": 234}),
    "model": "models:/demand-forecast-nyc/3",
}


@asset(partitions_def=daily_partitions, code_version=CODE_VERSION)
def costly_step(context: AssetExecutionContext, config: CostConfig, storage: ArtifactStorage, compute: ComputeBackend):
    yield from run_versioned_step(
        context,
        storage=storage,
        compute=compute,
        params=SampleParams(
            mode="commit",
            rows=321,
            burn_s=config.burn_s,
            alloc_mb=config.alloc_mb,
            orphan_burn_s=config.orphan_burn_s,
        ),
        inputs=UPSTREAM,
        timeout_s=120,
    )


class Step:
    """Materializes ``sample_step`` for DATE and says what happened."""

    def __init__(self, tmp_path: Path):
        self.base = f"file://{tmp_path}/storage"
        self.log = tmp_path / "launches.log"

    def launches(self) -> int:
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0

    def run(self, compute: ComputeBackend | None = None, step=sample_step, **config) -> dict:
        if step is sample_step:
            config = {"launch_log": str(self.log), **config}
        result = materialize(
            [step],
            partition_key=DATE,
            resources={
                "storage": ArtifactStorage(base_uri=self.base, landing_uri=f"{self.base}/landing"),
                "compute": compute or ComputeBackend(),
                "io_manager": ArtifactRefIOManagerFactory(base_uri=self.base),
            },
            run_config={"ops": {step.op.name: {"config": config}}},
        )
        (materialization,) = result.asset_materializations_for_node(step.op.name)
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
    assert params.versioned_fields() == {"mode": "commit", "city": "nyc", "score": 0.1, "rows": 0}
    local = ComputeBackend(spark=SparkConfig(master="local[2]"), sql_engine="spark").bind(params)
    cluster = ComputeBackend(
        spark=SparkConfig(master="spark://m:7077"), sql_engine="duckdb", mlflow_tracking_uri="http://m"
    ).bind(params.with_output("file:///out/v=1"))
    assert cluster.spark.master == "spark://m:7077" and cluster.engine == "duckdb" and local.engine == "spark"
    assert local.versioned_fields() == cluster.versioned_fields() == params.versioned_fields()
    assert SampleParams(mode="commit", city="sf", score=0.1).versioned_fields() != params.versioned_fields()


def test_a_step_records_what_its_workload_cost(tmp_path):
    """Wall time, CPU of the whole process tree (an orphaned child too) and peak memory; rows in and out."""
    step = Step(tmp_path)
    built = step.run(step=costly_step, burn_s=1.5, alloc_mb=200, orphan_burn_s=1.0)
    assert built["reused_committed_version"] is False
    assert built["rows_in"] == 1_234, "the rows of the committed inputs; a model reference has none"
    assert built["rows_out"] == built["rows"] == 321
    assert built["cpu_s"] >= 1.5 + 1.0, "the workload's CPU and its orphaned child's"
    assert built["wall_s"] >= 1.5 and built["cpu_s"] <= built["wall_s"] * (os.cpu_count() or 1)
    assert 200 <= built["peak_rss_mb"] < 4_096, "the 200 MiB it held, plus the interpreter"
    assert built["cost_measured"] == "wait4 + /proc"

    reused = step.run(step=costly_step, burn_s=1.5, alloc_mb=200, orphan_burn_s=1.0)
    assert reused["reused_committed_version"] is True and reused["version"] == built["version"]
    assert reused["wall_s"] == reused["cpu_s"] == reused["peak_rss_mb"] == 0, "nothing launched, nothing spent"
    assert reused["rows_in"] == 1_234 and reused["rows_out"] == 321


@asset(partitions_def=daily_partitions, code_version=CODE_VERSION, backfill_policy=BackfillPolicy.single_run())
def ranged_step(context: AssetExecutionContext, storage: ArtifactStorage, compute: ComputeBackend):
    """One launch for the dates of the range that are missing (here: one at a time, the sample commits one)."""
    planned = [plan_version(context, storage, d, {}, {"sample": 1}) for d in context.partition_keys]
    refs, _, _ = build_versions(
        context,
        storage=storage,
        compute=compute,
        planned=planned,
        params_for=lambda targets: SampleParams(mode="commit", rows=10, burn_s=0.5).with_output(*targets.values()),
        timeout_s=120,
    )
    yield Output(refs if len(refs) > 1 else next(iter(refs.values())))


def test_a_range_records_each_dates_own_cost(tmp_path):
    """The launch's cost lands on the date it built; a date found committed costs 0."""
    base = f"file://{tmp_path}/storage"
    resources = {
        "storage": ArtifactStorage(base_uri=base, landing_uri=f"{base}/landing"),
        "compute": ComputeBackend(),
        "io_manager": ArtifactRefIOManagerFactory(base_uri=base),
    }
    materialize([ranged_step], partition_key="2026-01-01", resources=resources)
    result = materialize(
        [ranged_step],
        resources=resources,
        tags={ASSET_PARTITION_RANGE_START_TAG: "2026-01-01", ASSET_PARTITION_RANGE_END_TAG: "2026-01-02"},
    )
    by_date = {
        m.partition: {k: getattr(v, "value", v) for k, v in m.metadata.items()}
        for m in result.asset_materializations_for_node("ranged_step")
    }
    assert by_date["2026-01-01"]["wall_s"] == by_date["2026-01-01"]["cpu_s"] == 0, "found committed"
    assert by_date["2026-01-02"]["cpu_s"] >= 0.5 and by_date["2026-01-02"]["rows_out"] == 10


def test_a_step_whose_pods_the_cluster_replaced_records_the_attempts_and_the_time_lost():
    """An evicted or preempted node is not a failure of the work, but the step's metadata says what it cost."""
    cost = StepCost()
    cost.add(
        WorkloadResult(wall_s=100.0, cpu_s=None, peak_rss_mb=None, measured="k8s", attempts={1: 2}, seconds_lost=42.34)
    )
    cost.add(
        WorkloadResult(
            wall_s=50.0, cpu_s=None, peak_rss_mb=None, measured="k8s", attempts={1: 2, 0: 2}, seconds_lost=7.0
        )
    )
    metadata = cost.metadata()
    assert metadata["pod_attempts"] == {"0": 2, "1": 3} and metadata["seconds_lost"] == 49.3
    assert cost.share(2).metadata()["pod_attempts"] == {"0": 2, "1": 3}
    undisturbed = StepCost()
    undisturbed.add(WorkloadResult(wall_s=1.0, cpu_s=0.5, peak_rss_mb=10.0, measured="wait4 + /proc"))
    assert "pod_attempts" not in undisturbed.metadata() and "seconds_lost" not in undisturbed.metadata()
