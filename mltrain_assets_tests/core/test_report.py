"""The model quality report: per date, each model against its gate, cost, staleness and late landings.

The state is built for real and cheaply: a Dagster instance with the models' materializations and
gate checks recorded by stand-in assets run under the real asset keys (the other dates and assets
as runless materializations), a sqlite MLflow registry with `staging` aliases, and landing
``_SUCCESS`` markers with chosen modification times. Two cities (sf fails its gate on the date)
and the recommender.
"""

import datetime as dt
import io
import json
import os
from pathlib import Path

import pytest
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetKey,
    AssetMaterialization,
    AssetSpec,
    Config,
    DagsterInstance,
    Definitions,
    MaterializeResult,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    asset,
    evaluate_automation_conditions,
    instance_for_test,
    materialize,
)
from mlflow.tracking import MlflowClient

from mltrain_assets.artifacts import read_manifest
from mltrain_assets.core.partitions import daily_partitions
from mltrain_assets.core.pipeline import all_pipelines
from mltrain_assets.core.report import PNG_SIGNATURE, quality_figure, render_markdown, render_png
from mltrain_assets.landing import success_uri
from mltrain_assets.pipelines.reporting.assets import ASSET, quality_report_asset
from mltrain_assets.pipelines.reporting.collect import collect_report
from mltrain_assets.resources.storage import ArtifactStorage
from mltrain_assets.resources.tracking import ModelRegistry

DATE = "2026-03-10"
DATES = ["2026-03-08", "2026-03-09", DATE]
CITIES = ["nyc", "sf"]
GRACE_HOURS = 4.0
CITY_PARTITIONS = MultiPartitionsDefinition({"date": daily_partitions, "city": StaticPartitionsDefinition(CITIES)})

MAPE = {
    "nyc": {"2026-03-08": 0.12, "2026-03-09": 0.11, DATE: 0.10},
    "sf": {"2026-03-08": 0.13, "2026-03-09": 0.14, DATE: 0.21},
}
AUC = {"2026-03-08": 0.83, "2026-03-09": 0.84, DATE: 0.86}
# (dataset, date) -> hours after the end of the day its _SUCCESS appeared (absent: not landed)
LANDED_AFTER_H = {
    ("rides", "2026-03-08"): 2.0,
    ("rides", "2026-03-09"): 9.0,  # late: after the 4 h grace
    ("rides", DATE): 1.0,
    ("interactions", "2026-03-08"): 0.5,
    ("interactions", DATE): 3.5,
}


def city_key(date: str, city: str) -> str:
    return str(MultiPartitionKey({"date": date, "city": city}))


class Figures(Config):
    metadata_json: str
    passed: bool


def _gated(name: str, check: str, partitions_def):
    """A stand-in for a gated model asset: records the given metadata and its blocking gate's result."""

    spec = AssetCheckSpec(check, asset=name, blocking=True, partitions_def=partitions_def)  # as gate_specs declares

    @asset(name=name, partitions_def=partitions_def, check_specs=[spec])
    def stand_in(config: Figures) -> MaterializeResult:
        return MaterializeResult(
            metadata=json.loads(config.metadata_json),
            check_results=[AssetCheckResult(check_name=check, passed=config.passed)],
        )

    return stand_in


CITY_MODEL = _gated("city_demand_model", "mape_below_threshold", CITY_PARTITIONS)
RECOMMENDER = _gated("recommender_model", "auc_above_threshold", daily_partitions)


def _run_gated(instance: DagsterInstance, stand_in, partition: str, metadata: dict, passed: bool) -> None:
    name = stand_in.key.to_user_string()
    materialize(
        [stand_in],
        instance=instance,
        partition_key=partition,
        run_config={"ops": {name: {"config": {"metadata_json": json.dumps(metadata), "passed": passed}}}},
        raise_on_error=False,  # a failed blocking gate fails the run; the materialization is recorded
    )


def _record(instance: DagsterInstance, asset_name: str, partition: str, **metadata) -> None:
    instance.report_runless_asset_event(AssetMaterialization(asset_name, partition=partition, metadata=metadata))


def _cost(wall_s: float, cpu_s: float | None, peak_rss_mb: float, reused: bool = False) -> dict:
    return {"wall_s": wall_s, "cpu_s": cpu_s, "peak_rss_mb": peak_rss_mb, "reused_committed_version": reused}


def build_world(instance: DagsterInstance, root: Path, tracking_uri: str) -> str:
    """Record the date's (and the history's) state; returns the landing URI."""
    for city in CITIES:
        for date in DATES[:-1]:
            _record(instance, "city_demand_model", city_key(date, city), mape=MAPE[city][date], naive_mape=0.3)
        passed = MAPE[city][DATE] < 0.15
        _run_gated(
            instance,
            CITY_MODEL,
            city_key(DATE, city),
            {"mape": MAPE[city][DATE], "naive_mape": 0.3, **_cost(5.0 if city == "nyc" else 4.0, 6.0, 700.0)},
            passed,
        )
    for date in DATES[:-1]:
        _record(instance, "recommender_model", date, auc=AUC[date])
    _run_gated(instance, RECOMMENDER, DATE, {"auc": AUC[DATE], **_cost(30.0, 55.0, 1500.0)}, passed=True)

    # Registrations: nyc promoted on 03-08 and on the date; sf on 03-09 (its date's gate failed: not registered);
    # the recommender on 03-09, and on the date it lost to the champion.
    _record(
        instance, "registered_demand_model", city_key("2026-03-08", "nyc"), model_version=1, promoted_to_staging=True
    )
    _record(instance, "registered_demand_model", city_key(DATE, "nyc"), model_version=2, promoted_to_staging=True)
    _record(
        instance, "registered_demand_model", city_key("2026-03-09", "sf"), model_version=1, promoted_to_staging=True
    )
    _record(instance, "registered_recommender", "2026-03-09", model_version=1, promoted_to_staging=True)
    _record(
        instance,
        "registered_recommender",
        DATE,
        model_version=2,
        promoted_to_staging=False,
        promotion_reason="champion wins against v1",
    )

    # The rest of the date's cost: ingestion, features (built, then reused by a second run), embeddings on k8s.
    _record(instance, "ride_events", DATE, **_cost(2.0, 3.0, 300.0), rows_in=1000, rows_out=990)
    _record(instance, "city_demand_features", DATE, **_cost(10.0, 20.0, 900.0))
    _record(instance, "city_demand_features", DATE, **_cost(0.0, 0.0, 0.0, reused=True))
    _record(instance, "user_interactions", DATE, **_cost(1.0, 1.0, 200.0))
    _record(instance, "interaction_embeddings", DATE, **_cost(12.0, None, None))

    client = MlflowClient(tracking_uri)
    for name, partitions, staging in (
        ("demand-forecast-nyc", [city_key("2026-03-08", "nyc"), city_key(DATE, "nyc")], "2"),
        ("demand-forecast-sf", [city_key("2026-03-09", "sf")], "1"),
        ("recommender", ["2026-03-09", DATE], "1"),
    ):
        client.create_registered_model(name)
        for partition in partitions:
            client.create_model_version(name, source=f"file://{root}/model", tags={"mltrain.partition": partition})
        client.set_registered_model_alias(name, "staging", staging)

    landing_uri = f"file://{root}/landing"
    for (dataset, date), hours in LANDED_AFTER_H.items():
        marker = Path(success_uri(landing_uri, dataset, date).removeprefix("file://"))
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("")
        end_of_day = dt.datetime.combine(dt.date.fromisoformat(date) + dt.timedelta(days=1), dt.time(), dt.UTC)
        stamp = (end_of_day + dt.timedelta(hours=hours)).timestamp()
        os.utime(marker, (stamp, stamp))
    return landing_uri


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    tracking_uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp, instance_for_test() as instance:
        mp.setenv("MLTRAIN_CITIES", ",".join(CITIES))
        landing_uri = build_world(instance, root, tracking_uri)
        registry = ModelRegistry(tracking_uri=tracking_uri)
        report = collect_report(
            instance,
            DATE,
            all_pipelines(),
            landing_uri=landing_uri,
            registry=registry,
            history_days=len(DATES),
            grace_hours=GRACE_HOURS,
        )
        yield {"instance": instance, "root": root, "landing_uri": landing_uri, "registry": registry, "report": report}


def _rows(report, pipeline: str) -> dict:
    (section,) = [s for s in report.sections if s.pipeline == pipeline]
    return section, {row.key or row.model_name: row for row in section.rows}


def test_each_city_is_shown_against_its_gate_baseline_and_promotion(world):
    section, rows = _rows(world["report"], "demand")
    assert section.threshold == 0.15 and section.lower_is_better and section.key_label == "city"
    assert rows["nyc"].value == 0.10 and rows["nyc"].baseline == 0.3 and rows["nyc"].gate_passed is True
    assert rows["nyc"].promoted is True and rows["nyc"].version == "2"
    assert rows["sf"].value == 0.21 and rows["sf"].gate_passed is False, "the gate's check result in that run"
    assert rows["sf"].promoted is None, "a failed gate registers nothing"
    # Staleness: days since the newest promotion on or before the date, and what `staging` is now.
    assert (rows["nyc"].last_promoted, rows["nyc"].days_since_promotion) == (DATE, 0)
    assert (rows["sf"].last_promoted, rows["sf"].days_since_promotion) == ("2026-03-09", 1)
    assert rows["nyc"].staging_now == "v2 (2026-03-10)" and rows["sf"].staging_now == "v1 (2026-03-09)"
    assert section.history == MAPE, "one series per city over the history"

    markdown = render_markdown(world["report"])
    assert "MAPE < 0.15" in markdown
    assert "| nyc | 0.100 | 0.300 | < 0.15 | pass | v2 promoted | 0 (2026-03-10) | v2 (2026-03-10) |" in markdown
    assert (
        "| sf | 0.210 | 0.300 | < 0.15 | **FAIL** (MAPE < 0.15 not met) | not registered | 1 (2026-03-09) |" in markdown
    )


def test_the_recommender_is_shown_against_its_auc_gate(world):
    section, rows = _rows(world["report"], "recsys")
    row = rows["recommender"]
    assert section.threshold == 0.82 and not section.lower_is_better
    assert row.value == 0.86 and row.gate_passed is True
    assert row.promoted is False and row.version == "2" and "champion wins" in row.reason
    assert (row.last_promoted, row.days_since_promotion, row.staging_now) == ("2026-03-09", 1, "v1 (2026-03-09)")
    assert section.history == {"": AUC}
    assert "| recommender | 0.860 | > 0.82 | pass | v2 not promoted | 1 (2026-03-09) | v1 (2026-03-09) |" in (
        render_markdown(world["report"])
    )


def test_cost_sums_every_materialization_of_the_date(world):
    costs = {c.pipeline: c for c in world["report"].costs}
    demand = costs["demand"]
    # ride_events 2 + features 10 (+0 reused) + nyc 5 + sf 4; registrations have no cost.
    assert demand.wall_s == pytest.approx(21.0) and demand.cpu_s == pytest.approx(3 + 20 + 6 + 6)
    assert demand.materializations == 6 and demand.reused == 1 and demand.launched == 4
    assert demand.peak_rss_mb == 900.0
    recsys = costs["recsys"]
    assert recsys.wall_s == pytest.approx(43.0) and recsys.cpu_s == pytest.approx(56.0)
    assert recsys.unmeasured == 1, "the k8s step's CPU is unknown, and said so"
    markdown = render_markdown(world["report"])
    assert "| demand | 6 | 4 | 1 | 21.0 | 35.0 | 900 |" in markdown
    assert "56.0 (+1 unmeasured on k8s)" in markdown


def test_late_landings_are_flagged_per_date(world):
    landings = {(row.dataset, row.date): row for row in world["report"].landings}
    assert landings[("rides", "2026-03-09")].late is True and landings[("rides", "2026-03-09")].hours_after_day == 9.0
    assert landings[("rides", DATE)].late is False
    assert landings[("interactions", "2026-03-09")].landed_at is None
    markdown = render_markdown(world["report"])
    assert "due at the end of the day + 4 h" in markdown
    assert "| 2026-03-09 | not landed | **late** (+9.0 h) |" in markdown
    assert "| 2026-03-10 | on time (+3.5 h) | on time (+1.0 h) |" in markdown
    assert "1 of 5 landed days arrived late." in markdown


def test_the_plot_has_one_line_per_city_and_the_threshold(world):
    figure = quality_figure(world["report"])
    demand_axes, recsys_axes = figure.axes
    lines = {line.get_label(): line for line in demand_axes.get_lines()}
    assert set(lines) == {"nyc", "sf", "threshold 0.15"}
    assert list(lines["sf"].get_ydata()) == [MAPE["sf"][d] for d in DATES]
    assert set(lines["threshold 0.15"].get_ydata()) == {0.15}
    recsys_lines = {line.get_label(): line for line in recsys_axes.get_lines()}
    assert list(recsys_lines["recommender"].get_ydata()) == [AUC[d] for d in DATES] and "threshold 0.82" in recsys_lines

    png = render_png(world["report"])
    assert png.startswith(PNG_SIGNATURE)
    assert png == render_png(world["report"]), "the same report renders the same bytes"
    pil = pytest.importorskip("PIL.Image")
    with pil.open(io.BytesIO(png)) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 400 and image.size[1] > 300


def test_the_asset_commits_the_report_and_embeds_the_plot(world, tmp_path, monkeypatch):
    monkeypatch.setenv("MLTRAIN_CITIES", ",".join(CITIES))
    report_asset = quality_report_asset(all_pipelines())
    resources = {
        "storage": ArtifactStorage(base_uri=f"file://{tmp_path}/storage", landing_uri=world["landing_uri"]),
        "registry": world["registry"],
    }
    run_config = {"ops": {ASSET: {"config": {"history_days": len(DATES)}}}}

    def run() -> dict:
        result = materialize(
            [report_asset], instance=world["instance"], partition_key=DATE, resources=resources, run_config=run_config
        )
        (materialization,) = result.asset_materializations_for_node(ASSET)
        return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}

    first = run()
    assert "![quality per date](data:image/png;base64," in first["report"], "the UI shows the plot inline"
    assert "**FAIL** (MAPE < 0.15 not met)" in first["report"]
    assert first["gates_failed"] == 1 and first["late_landings"] == 1 and first["models"] == 3
    manifest = read_manifest(first["uri"])
    assert set(manifest["files"]) == {"report.md", "quality.png", "report.json"}
    stored = Path(first["uri"].removeprefix("file://"))
    assert (stored / "quality.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "![quality per date](quality.png)" in (stored / "report.md").read_text()
    again = run()
    assert again["reused_committed_version"] is True and again["version"] == first["version"]


def test_a_city_update_requests_the_date_even_with_other_cities_missing(monkeypatch):
    """Automation: one city's model for a date is enough; the others may never come (a failed gate)."""
    monkeypatch.setenv("MLTRAIN_CITIES", ",".join(CITIES))
    pipelines = all_pipelines()
    report_asset = quality_report_asset(pipelines)
    upstream = [
        AssetSpec(name, partitions_def=CITY_PARTITIONS if name in p.keyed_assets else daily_partitions)
        for p in pipelines
        for name in (*p.daily_assets, *p.keyed_assets)
    ]
    resources = {
        "storage": ArtifactStorage(base_uri="file:///unused", landing_uri="file:///unused"),
        "registry": ModelRegistry(tracking_uri="sqlite:///unused"),
    }
    defs = Definitions(assets=[report_asset, *upstream], resources=resources)
    with instance_for_test() as instance:
        first = evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.get_num_requested(AssetKey(ASSET)) == 0
        _record(instance, "city_demand_model", city_key("2026-03-09", "nyc"), mape=0.1)
        second = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert set(second.get_requested_partitions(AssetKey(ASSET))) == {"2026-03-09"}


def test_freshness_rows_follow_each_assets_own_policy_and_never_move_the_version_while_unchanged():
    from mltrain_assets.core.assets import FRESHNESS
    from mltrain_assets.core.report_data import FreshnessRow, QualityReport

    landed = FRESHNESS["landed"]
    warn = landed.warn_window.to_timedelta().total_seconds() / 3600
    fail = landed.fail_window.to_timedelta().total_seconds() / 3600
    assert (warn, fail) == (28, 52)  # a day's cadence + the report's landing grace (4 h); fails a day later

    def row(age):
        return FreshnessRow("demand", "ride_events", "landed", warn, fail, "2026-11-28T04:00:00+00:00", age)

    assert [row(a).status for a in (1.0, 28.5, 52.5)] == ["fresh", "warn", "fail"]
    assert row(None).status == "never materialized"

    def report(age, as_of):
        return QualityReport("2026-11-28", 1, 4.0, [], [], [], [row(age)], as_of)

    assert report(1.0, "t1").fingerprint() == report(2.0, "t2").fingerprint()
    assert report(1.0, "t1").fingerprint() != report(29.0, "t2").fingerprint()
    assert (
        "| demand | landed | ride_events | 2026-11-28T04:00:00+00:00 | 29.0 | 28 / 52 | **warn** |"
        in render_markdown(report(29.0, "t2"))
    )
