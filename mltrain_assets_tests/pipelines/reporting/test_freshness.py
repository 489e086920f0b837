"""Freshness per city: a city that stopped getting new models is stale while the others are fresh.

The instance holds the demand pipeline's date x city materializations at chosen times (Dagster's own
``freeze_time``): nyc's newest date 10 h ago, sf's 60 h ago (its fail window is 56 h) and, 5 h ago, a
backfill of an old sf date, which must not make sf look fresh. The asset's own policy says fresh.
"""

import datetime as dt

import pytest
from dagster import (
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    AssetSpec,
    DagsterInstance,
    Definitions,
    MultiPartitionKey,
    SensorResult,
    SkipReason,
    build_sensor_context,
    define_asset_job,
    instance_for_test,
)
from dagster._core.test_utils import freeze_time

from mltrain_assets.core.pipeline import all_pipelines
from mltrain_assets.core.report import QualityReport, render_markdown
from mltrain_assets.pipelines.reporting.collect import _freshness, key_freshness
from mltrain_assets.pipelines.reporting.freshness import SENSOR_NAME, key_freshness_checks, key_freshness_sensor

KEYED = ("city_demand_model", "registered_demand_model", "demand_forecasts")
NOW = dt.datetime.now(dt.UTC)
YESTERDAY = (NOW - dt.timedelta(days=1)).date().isoformat()


def _day(days_ago: int) -> str:
    return (NOW - dt.timedelta(days=days_ago)).date().isoformat()


def _record(instance: DagsterInstance, hours_ago: float, city: str, date: str) -> None:
    with freeze_time(NOW - dt.timedelta(hours=hours_ago)):
        for asset in KEYED:
            partition = str(MultiPartitionKey({"date": date, "city": city}))
            instance.report_runless_asset_event(AssetMaterialization(asset, partition=partition))


@pytest.fixture
def world(monkeypatch):
    monkeypatch.setenv("MLTRAIN_CITIES", "nyc,sf")
    (demand,) = [p for p in all_pipelines() if p.name == "demand"]
    with instance_for_test() as instance:
        _record(instance, 60, "sf", _day(3))
        _record(instance, 10, "nyc", _day(1))
        _record(instance, 5, "sf", _day(20))  # a backfill of an old date
        yield instance, demand


def test_a_stale_city_is_reported_stale_while_the_asset_and_other_cities_are_fresh(world):
    instance, demand = world
    rows = {(row.asset, row.key): row for row in key_freshness(instance, demand, NOW)}
    assert set(rows) == {(asset, city) for asset in KEYED for city in ("nyc", "sf")}
    sf, nyc = rows[("city_demand_model", "sf")], rows[("city_demand_model", "nyc")]
    assert (sf.status, sf.newest_date, sf.age_hours) == ("fail", _day(3), pytest.approx(60, abs=0.1))
    assert (nyc.status, nyc.newest_date, nyc.age_hours) == ("fresh", _day(1), pytest.approx(10, abs=0.1))
    assert sf.describe().startswith("city_demand_model sf: STALE (fail): last materialized ")
    assert "warn after 32 h, fail after 56 h" in sf.describe()
    # The asset's own policy only sees its last update (the backfill, 5 h ago): fresh.
    whole = {row.asset: row for row in _freshness(instance, demand, NOW)}
    assert whole["city_demand_model"].status == "fresh"

    report = QualityReport(YESTERDAY, 1, 4.0, [], [], [], list(whole.values()), NOW.isoformat(), list(rows.values()))
    assert {(row.asset, row.key) for row in report.stale_keys()} == {(asset, "sf") for asset in KEYED}
    markdown = render_markdown(report, image=None)
    assert "**1 of 2 stale: sf.**" in markdown
    assert (
        f"| demand | city_demand_model | sf | {_day(3)} | {sf.last_updated} | 60.0 | 32 / 56 | **fail** |" in markdown
    )
    assert f"| demand | city_demand_model | nyc | {_day(1)} | {nyc.last_updated} | 10.0 | 32 / 56 | fresh |" in markdown


def test_a_city_never_materialized_is_stale():
    with pytest.MonkeyPatch.context() as mp, instance_for_test() as instance:
        mp.setenv("MLTRAIN_CITIES", "nyc,sf")
        (demand,) = [p for p in all_pipelines() if p.name == "demand"]
        _record(instance, 1, "nyc", _day(1))
        rows = {(row.asset, row.key): row for row in key_freshness(instance, demand, NOW)}
        never = rows[("city_demand_model", "sf")]
        assert never.status == "never materialized" and never.stale and never.newest_date is None
        assert rows[("city_demand_model", "nyc")].status == "fresh"


def _latest(instance: DagsterInstance, asset: str) -> dict:
    history = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(AssetKey(asset), "city_fresh"), limit=50
    )
    latest = {}
    for record in history:  # newest first
        latest.setdefault(record.partition, (record.status.value, record.evaluation))
    return latest


def test_the_sensor_flags_the_stale_city_on_its_partition_of_the_check_once(world):
    instance, demand = world
    sensor = key_freshness_sensor([demand])
    assert sensor.name == SENSOR_NAME
    context = build_sensor_context(instance=instance)
    result = sensor(context)
    assert isinstance(result, SensorResult)
    for event in result.asset_events:  # what the daemon does with a sensor's asset events
        instance.report_runless_asset_event(event)

    checks = _latest(instance, "city_demand_model")
    latest_sf, latest_nyc = (f"{city}|{YESTERDAY}" for city in ("sf", "nyc"))
    assert set(checks) == {latest_sf, latest_nyc}, "one result per city, on its partition of the latest date"
    status, sf = checks[latest_sf]
    assert status == "FAILED" and sf.severity == AssetCheckSeverity.ERROR and not sf.blocking
    assert sf.description.startswith("city_demand_model sf: STALE (fail)") and sf.metadata["newest_date"].value == _day(
        3
    )
    status, nyc = checks[latest_nyc]
    assert status == "SUCCEEDED" and nyc.description.startswith("city_demand_model nyc: fresh")
    # The UI counts each as current: nyc's judged its materialization, sf's partition has none.
    info = instance.event_log_storage.get_asset_check_partition_info(
        [AssetCheckKey(AssetKey("city_demand_model"), "city_fresh")]
    )
    assert {i.partition_key: i.is_current for i in info} == {latest_sf: True, latest_nyc: True}

    # Nothing changed: nothing recorded again.
    again = sensor(build_sensor_context(instance=instance, cursor=result.cursor))
    assert isinstance(again, SkipReason)
    # sf gets its newest date: its result turns, nyc's stays as it was.
    _record(instance, 0, "sf", YESTERDAY)
    turned = sensor(build_sensor_context(instance=instance, cursor=result.cursor))
    assert isinstance(turned, SensorResult)
    assert {(e.asset_key.to_user_string(), e.partition, e.passed) for e in turned.asset_events} == {
        (asset, latest_sf, True) for asset in KEYED
    }


def test_running_the_check_for_a_partition_judges_that_partitions_city(world):
    """What the UI's "Execute" and a pipeline job's run do: the same rule, for the partition's city."""
    instance, demand = world
    checks = key_freshness_checks([demand])
    check_key = AssetCheckKey(AssetKey("city_demand_model"), "city_fresh")
    (model_check,) = [c for c in checks if check_key in c.check_keys]

    partitions_def = model_check.get_spec_for_check_key(check_key).partitions_def
    job = define_asset_job("check_only", selection=AssetSelection.checks(check_key), partitions_def=partitions_def)
    defs = Definitions(
        assets=[AssetSpec("city_demand_model", partitions_def=partitions_def)], asset_checks=[model_check], jobs=[job]
    )
    verdicts = {}
    for city in ("nyc", "sf"):
        result = defs.resolve_job_def("check_only").execute_in_process(
            # The run's partition as a tag: execute_in_process checks partition_key against selected assets (none).
            tags={"dagster/partition": str(MultiPartitionKey({"date": YESTERDAY, "city": city}))},
            instance=instance,
        )
        (evaluation,) = result.get_asset_check_evaluations()
        verdicts[city] = (evaluation.partition, evaluation.passed, evaluation.severity)
    assert verdicts == {
        "nyc": (f"nyc|{YESTERDAY}", True, AssetCheckSeverity.ERROR),
        "sf": (f"sf|{YESTERDAY}", False, AssetCheckSeverity.ERROR),
    }
