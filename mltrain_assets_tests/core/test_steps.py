"""``run_versioned_step``: version -> skip if committed -> launch -> reference.

The version hashes the asset's code version, its inputs' versions and the params' versioned
fields; where or how the workload runs (Spark master, SQL engine, MLflow) is not part of it.
"""

import os
from pathlib import Path

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    Config,
    DagsterInstance,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    Output,
    StaticPartitionsDefinition,
    asset,
    instance_for_test,
    materialize,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from mltrain_assets.artifacts import ArtifactRef, compute_version, read_manifest
from mltrain_assets.core.gates import metric_below
from mltrain_assets.core.partitions import daily_partitions
from mltrain_assets.core.steps import (
    StepCost,
    build_versions,
    check_results,
    gate_specs,
    plan_version,
    run_versioned_step,
    versions_output,
)
from mltrain_assets.resources.compute import Compute, WorkloadResult
from mltrain_assets.resources.deployments import LocalCompute
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
def sample_step(context: AssetExecutionContext, config: StepConfig, storage: ArtifactStorage, compute: Compute):
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
def costly_step(context: AssetExecutionContext, config: CostConfig, storage: ArtifactStorage, compute: Compute):
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

    def run(self, compute: Compute | None = None, step=sample_step, **config) -> dict:
        if step is sample_step:
            config = {"launch_log": str(self.log), **config}
        result = materialize(
            [step],
            partition_key=DATE,
            resources={
                "storage": ArtifactStorage(base_uri=self.base, landing_uri=f"{self.base}/landing"),
                "compute": compute or LocalCompute(),
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
    first = step.run(LocalCompute(spark=SparkConfig(master="local[2]"), sql_engine="spark"))
    elsewhere = LocalCompute(
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
    local = LocalCompute(spark=SparkConfig(master="local[2]"), sql_engine="spark").bind(params)
    cluster = LocalCompute(
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
def ranged_step(context: AssetExecutionContext, storage: ArtifactStorage, compute: Compute):
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
        "compute": LocalCompute(),
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


# ------------------------------------------------------------------ gates per partition

SCORE_GATE = metric_below("score_below_threshold", "score", 0.5)
CITY_DAYS = MultiPartitionsDefinition({"date": daily_partitions, "city": StaticPartitionsDefinition(["nyc", "sf"])})


class ScoreConfig(Config):
    score: float


@asset(partitions_def=CITY_DAYS, check_specs=gate_specs("city_model", [SCORE_GATE], CITY_DAYS))
def city_model(context: AssetExecutionContext, config: ScoreConfig, storage: ArtifactStorage, compute: Compute):
    yield from run_versioned_step(
        context,
        storage=storage,
        compute=compute,
        params=SampleParams(mode="commit", city=context.partition_key.keys_by_dimension["city"], score=config.score),
        inputs={},
        timeout_s=60,
        gates=[SCORE_GATE],
    )


@asset(partitions_def=CITY_DAYS)
def city_forecast(city_model: ArtifactRef) -> None:
    """Downstream of the gate: runs only where the city's gate passed."""


@asset(
    partitions_def=daily_partitions,
    code_version=CODE_VERSION,
    backfill_policy=BackfillPolicy.single_run(),
    check_specs=gate_specs("ranged_gated", [SCORE_GATE], daily_partitions),
)
def ranged_gated(context: AssetExecutionContext, config: ScoreConfig, storage: ArtifactStorage, compute: Compute):
    """A range run's dates, gated each on its own score (the sample workload commits one date per launch)."""
    planned = [plan_version(context, storage, d, {}, {"sample": 1}) for d in context.partition_keys]
    refs, outcomes, _ = build_versions(
        context,
        storage=storage,
        compute=compute,
        planned=planned,
        params_for=lambda targets: SampleParams(mode="commit", score=config.score).with_output(*targets.values()),
        timeout_s=120,
        gates=[SCORE_GATE],
    )
    yield versions_output(refs, {})
    yield from check_results(outcomes)


def _resources(tmp_path: Path) -> dict:
    base = f"file://{tmp_path}/storage"
    return {
        "storage": ArtifactStorage(base_uri=base, landing_uri=f"{base}/landing"),
        "compute": LocalCompute(),
        "io_manager": ArtifactRefIOManagerFactory(base_uri=base),
    }


def _latest_by_partition(instance: DagsterInstance, asset: str) -> dict[str, tuple[str, AssetCheckEvaluation]]:
    """``{partition: (status, evaluation)}`` of the gate's latest execution per partition, read from the instance."""
    history = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(AssetKey(asset), SCORE_GATE.name), limit=100
    )
    latest: dict[str, tuple[str, AssetCheckEvaluation]] = {}
    for record in history:  # newest first
        assert record.evaluation is not None and record.partition == record.evaluation.partition
        latest.setdefault(record.partition, (record.status.value, record.evaluation))
    return latest


def test_one_citys_failed_gate_is_that_partitions_alone_and_blocks_only_its_downstream(tmp_path):
    with instance_for_test() as instance:
        for city, score in (("nyc", 0.9), ("sf", 0.1)):
            materialize(
                [city_model, city_forecast],
                partition_key=MultiPartitionKey({"date": DATE, "city": city}),
                resources=_resources(tmp_path),
                run_config={"ops": {"city_model": {"config": {"score": score}}}},
                instance=instance,
                raise_on_error=False,
            )
        gates = _latest_by_partition(instance, "city_model")
        assert set(gates) == {f"nyc|{DATE}", f"sf|{DATE}"}, "one result per (date, city), none for the whole asset"
        status, failed = gates[f"nyc|{DATE}"]
        assert status == "FAILED" and failed.blocking
        assert failed.description == f"city_model nyc|{DATE}: rule score < 0.5: observed score=0.9"
        status, passed = gates[f"sf|{DATE}"]
        assert status == "SUCCEEDED" and passed.description == f"sf|{DATE}: SCORE 0.1 < 0.5"
        # Each partition's result judged that partition's materialization (the UI shows it as current).
        info = instance.event_log_storage.get_asset_check_partition_info(
            [AssetCheckKey(AssetKey("city_model"), SCORE_GATE.name)]
        )
        assert {i.partition_key: i.is_current for i in info} == {f"nyc|{DATE}": True, f"sf|{DATE}": True}
        # Blocking: the failed city's forecast did not run; the other city's did.
        assert instance.get_materialized_partitions(AssetKey("city_forecast")) == {f"sf|{DATE}"}


def test_a_range_run_records_each_dates_own_gate_result(tmp_path):
    days = ("2026-01-01", "2026-01-02")
    with instance_for_test() as instance:
        # 2026-01-01 committed with a score over the gate; the range run then builds 2026-01-02 under it.
        first = materialize(
            [ranged_gated],
            partition_key=days[0],
            resources=_resources(tmp_path),
            run_config={"ops": {"ranged_gated": {"config": {"score": 0.9}}}},
            instance=instance,
            raise_on_error=False,
        )
        assert not first.success
        ranged = materialize(
            [ranged_gated],
            resources=_resources(tmp_path),
            run_config={"ops": {"ranged_gated": {"config": {"score": 0.1}}}},
            tags={ASSET_PARTITION_RANGE_START_TAG: days[0], ASSET_PARTITION_RANGE_END_TAG: days[1]},
            instance=instance,
            raise_on_error=False,
        )
        assert not ranged.success, "a failed gate fails the step, as a blocking check does"
        evaluations = {e.partition: e for e in ranged.get_asset_check_evaluations()}
        assert set(evaluations) == set(days)
        assert not evaluations[days[0]].passed and evaluations[days[1]].passed
        assert evaluations[days[0]].description == f"ranged_gated {days[0]}: rule score < 0.5: observed score=0.9"
        assert evaluations[days[1]].description == f"{days[1]}: SCORE 0.1 < 0.5"
        gates = _latest_by_partition(instance, "ranged_gated")
        assert {day: gates[day][0] for day in days} == {days[0]: "FAILED", days[1]: "SUCCEEDED"}
        assert {gates[day][1].partition for day in days} == set(days)
        info = instance.event_log_storage.get_asset_check_partition_info(
            [AssetCheckKey(AssetKey("ranged_gated"), SCORE_GATE.name)]
        )
        assert all(i.is_current for i in info) and {i.partition_key for i in info} == set(days)
