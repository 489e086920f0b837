"""The reference IO manager enforces gates for every consumer: a gated reference, a window with
missing days, or a reference built from an input version that has since changed, fails the
consumer once (no retry), naming what is wrong."""

import json
import shutil
from pathlib import Path

from dagster import AssetExecutionContext, Config, DagsterEventType, RetryPolicy, asset, materialize

from mltrain_assets.artifacts import ArtifactRef, quarantine
from mltrain_assets.core.gates import metric_below
from mltrain_assets.core.partitions import daily_partitions, window_input
from mltrain_assets.core.steps import gate_specs, run_versioned_step
from mltrain_assets.resources.compute import Compute
from mltrain_assets.resources.deployments import LocalCompute
from mltrain_assets.resources.storage import GATE_FAILURES, ArtifactRefIOManagerFactory, ArtifactStorage
from mltrain_assets.workloads.common.dates import Window
from mltrain_assets_tests.resources.sample_workload import SampleParams

SCORE_GATE = metric_below("score_below_threshold", "score", 0.5, "Score below 0.5.")
RETRIES = RetryPolicy(max_retries=2)  # consumers may retry: a gate refusal must not


class ScoreConfig(Config):
    score: float


@asset(partitions_def=daily_partitions, check_specs=gate_specs("scored", [SCORE_GATE]))
def scored(context: AssetExecutionContext, config: ScoreConfig, storage: ArtifactStorage, compute: Compute):
    yield from run_versioned_step(
        context,
        storage=storage,
        compute=compute,
        params=SampleParams(mode="commit", score=config.score),
        inputs={},
        timeout_s=60,
        gates=[SCORE_GATE],
    )


@asset(partitions_def=daily_partitions, retry_policy=RETRIES)
def consumer(scored: ArtifactRef) -> None:
    raise AssertionError("a gated reference must never reach an asset body")


@asset(partitions_def=daily_partitions, ins={"scored": window_input(Window(days=3))}, retry_policy=RETRIES)
def window_consumer(context: AssetExecutionContext, scored: dict[str, ArtifactRef]) -> None:
    context.add_output_metadata({"dates": list(scored)})


@asset(partitions_def=daily_partitions)
def derived(context: AssetExecutionContext, scored: ArtifactRef, storage: ArtifactStorage, compute: Compute):
    yield from run_versioned_step(
        context,
        storage=storage,
        compute=compute,
        params=SampleParams(mode="commit", score=0.0),
        inputs={"scored": scored},
        timeout_s=60,
    )


@asset(partitions_def=daily_partitions, retry_policy=RETRIES)
def derived_consumer(context: AssetExecutionContext, derived: ArtifactRef) -> None:
    context.add_output_metadata({"derived_version": derived.version})


ASSETS = [scored, consumer, window_consumer, derived, derived_consumer]


def _materialize(tmp_path: Path, selection: str, partition: str, score: float | None = None):
    base = f"file://{tmp_path}/storage"
    return materialize(
        ASSETS,
        selection=[selection],
        partition_key=partition,
        resources={
            "storage": ArtifactStorage(base_uri=base, landing_uri=f"{base}/landing"),
            "compute": LocalCompute(),
            "io_manager": ArtifactRefIOManagerFactory(base_uri=base),
        },
        run_config={"ops": {"scored": {"config": {"score": score}}}} if score is not None else None,
        raise_on_error=False,
    )


def _failure_text(result) -> str:
    return " ".join(str(e.step_failure_data.error.message) for e in result.all_events if e.is_step_failure)


def _retries(result) -> int:
    return sum(e.event_type == DagsterEventType.STEP_UP_FOR_RETRY for e in result.all_events)


def test_reference_with_failed_gates_is_refused_once_naming_the_violation(tmp_path):
    produced = _materialize(tmp_path, "scored", "2026-01-03", score=0.9)
    violation = "scored 2026-01-03: rule score < 0.5: observed score=0.9"
    (check,) = produced.get_asset_check_evaluations()
    assert not check.passed and check.description == violation
    # Nothing is lost: the version is committed and its reference written, carrying the verdict.
    ref_file = tmp_path / "storage" / "_refs" / "scored" / "2026-01-03.json"
    assert ArtifactRef.from_json(ref_file.read_text()).metadata[GATE_FAILURES] == [violation]

    consumed = _materialize(tmp_path, "consumer", "2026-01-03")
    assert not consumed.success
    text = _failure_text(consumed)
    assert f"consumer 2026-01-03 is blocked by failed upstream gates: {violation}" in text
    assert _retries(consumed) == 0


def test_window_with_a_missing_day_fails_once_naming_it(tmp_path):
    for day in ("2026-01-01", "2026-01-03"):
        assert _materialize(tmp_path, "scored", day, score=0.1).success
    missing = _materialize(tmp_path, "window_consumer", "2026-01-03")
    assert not missing.success
    text = _failure_text(missing)
    assert "window_consumer 2026-01-03 needs scored for 2026-01-01..2026-01-03" in text
    assert "1 partition(s) are not materialized: ['2026-01-02']" in text
    assert _retries(missing) == 0

    assert _materialize(tmp_path, "scored", "2026-01-02", score=0.1).success
    complete = _materialize(tmp_path, "window_consumer", "2026-01-03")
    assert complete.success
    (materialization,) = complete.asset_materializations_for_node("window_consumer")
    assert materialization.metadata["dates"].value == ["2026-01-01", "2026-01-02", "2026-01-03"]


def test_window_holding_a_gated_day_is_refused(tmp_path):
    for day, score in (("2026-01-01", 0.1), ("2026-01-02", 0.7), ("2026-01-03", 0.1)):
        _materialize(tmp_path, "scored", day, score=score)
    refused = _materialize(tmp_path, "window_consumer", "2026-01-03")
    assert not refused.success
    assert (
        "window_consumer 2026-01-03 is blocked by failed upstream gates: "
        "scored 2026-01-02: rule score < 0.5: observed score=0.7"
    ) in _failure_text(refused)
    assert _retries(refused) == 0


def test_a_reference_built_from_an_input_that_changed_is_refused_until_rebuilt(tmp_path):
    day = "2026-01-05"
    assert _materialize(tmp_path, "scored", day, score=0.1).success
    assert _materialize(tmp_path, "derived", day).success
    assert _materialize(tmp_path, "derived_consumer", day).success
    refs = tmp_path / "storage" / "_refs"
    old = ArtifactRef.from_json((refs / "scored" / f"{day}.json").read_text()).version

    # The input changes (a re-landed day, say) and fails its gate; derived was not rebuilt.
    _materialize(tmp_path, "scored", day, score=0.8)
    new = ArtifactRef.from_json((refs / "scored" / f"{day}.json").read_text()).version
    stale = _materialize(tmp_path, "derived_consumer", day)
    assert not stale.success and _retries(stale) == 0
    assert (
        f"derived_consumer {day} is blocked by out-of-date inputs: derived {day} was built from scored {day} "
        f"v={old}, which is now v={new} and failed its gates (scored {day}: rule score < 0.5: observed score=0.8): "
        f"materialize derived {day} again first"
    ) in _failure_text(stale)

    # Once the input is good again and derived is rebuilt from it, its consumer runs.
    assert _materialize(tmp_path, "scored", day, score=0.2).success
    assert _materialize(tmp_path, "derived", day).success
    assert _materialize(tmp_path, "derived_consumer", day).success


def test_a_quarantined_input_is_refused_by_name_and_rebuilt_by_its_next_materialization(tmp_path):
    day = "2026-01-06"
    assert _materialize(tmp_path, "scored", day, score=0.1).success
    assert _materialize(tmp_path, "derived", day).success
    ref = ArtifactRef.from_json((tmp_path / "storage" / "_refs" / "derived" / f"{day}.json").read_text())
    ref = ref.resolved(f"file://{tmp_path}/storage")
    quarantine(ref.uri, "result.json: has SHA-256 0123…, its manifest recorded 4567…")

    refused = _materialize(tmp_path, "derived_consumer", day)
    assert not refused.success and _retries(refused) == 0
    assert (
        f"derived_consumer {day} cannot read its inputs: derived {day} v={ref.version} is not committed any more "
        f"(quarantined: result.json: has SHA-256 0123…, its manifest recorded 4567…): materialize derived {day} again"
    ) in _failure_text(refused)

    rebuilt = _materialize(tmp_path, "derived", day)
    (materialization,) = rebuilt.asset_materializations_for_node("derived")
    assert materialization.metadata["reused_committed_version"].value is False
    assert materialization.metadata["version"].value == ref.version  # the same version, rebuilt in place
    assert _materialize(tmp_path, "derived_consumer", day).success


def test_references_locate_versions_relative_to_the_storage_root_so_a_moved_store_works(tmp_path):
    day = "2026-01-07"
    assert _materialize(tmp_path / "old", "scored", day, score=0.1).success
    stored = json.loads((tmp_path / "old" / "storage" / "_refs" / "scored" / f"{day}.json").read_text())
    assert stored["uri"].startswith(f"scored/{day}/v=") and "://" not in stored["uri"]

    shutil.move(str(tmp_path / "old"), str(tmp_path / "moved"))  # the whole home, somewhere else
    moved = _materialize(tmp_path / "moved", "derived", day)
    assert moved.success
    (materialization,) = moved.asset_materializations_for_node("derived")
    assert materialization.metadata["uri"].value.startswith(f"file://{tmp_path}/moved/storage/derived/{day}/v=")
