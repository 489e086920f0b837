"""City-hour aggregates: each raw day once, one version per date, and checked on the other engine."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mltrain_assets.artifacts import ArtifactWriter, normalize_uri, read_manifest, read_table
from mltrain_assets.core.gates import ENGINE_PARITY
from mltrain_assets.pipelines.demand.contract import CITIES
from mltrain_assets.pipelines.demand.params import AggregatesParams
from mltrain_assets.pipelines.demand.simulate import simulate_rides_day
from mltrain_assets.pipelines.demand.workloads import aggregates as aggregates_module
from mltrain_assets.pipelines.demand.workloads.aggregates import (
    AGGREGATES_SCHEMA,
    PARITY_CITIES,
    PARITY_HOURS,
    build_aggregates,
    day_hours,
    parity_sample,
    read_aggregates,
)
from mltrain_assets.pipelines.demand.workloads.sql_engines import sql_session
from mltrain_assets.workloads.common.runtime import DataRejected

DATES = ["2026-03-09", "2026-03-10"]
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("ride_events")
    versions = {}
    for date in DATES:
        uri = normalize_uri(str(root / date))
        writer = ArtifactWriter(uri, producer="tests", code_version="test")
        writer.write_table("events.parquet", simulate_rides_day(date, 8_000))
        writer.commit({"date": date})
        versions[date] = uri
    return versions


def _targets(tmp_path, dates=DATES) -> dict[str, str]:
    return {date: normalize_uri(str(tmp_path / date / "v=1")) for date in dates}


def test_a_day_becomes_its_city_hour_counts_sums_and_weather(events, tmp_path):
    targets = _targets(tmp_path, DATES[:1])
    build_aggregates(events, targets, "duckdb", check_parity_on_other_engine=False)
    table = read_aggregates(targets[DATES[0]])
    assert table.schema.equals(AGGREGATES_SCHEMA)

    rides = read_table(events[DATES[0]], "events.parquet").to_pandas()
    rides["hour"] = rides.requested_at.dt.floor("h")
    completed = rides[rides.status == "completed"]
    expected = pd.DataFrame(
        {
            "rides": rides.groupby(["city", "hour"]).size(),
            "cancelled": rides[rides.status == "cancelled"].groupby(["city", "hour"]).size(),
            "fare_sum": completed.groupby(["city", "hour"]).fare_usd.sum(),
            "temperature": rides.groupby(["city", "hour"]).temperature_c.mean(),
        }
    ).fillna({"cancelled": 0})
    got = table.to_pandas().set_index(["city", "ts"])
    got.index = got.index.set_names(["city", "hour"])
    assert len(got) == len(expected) == len(CITIES) * 24
    assert (got.rides == expected.rides).all() and (got.cancelled == expected.cancelled).all()
    assert ((got.fare_sum - expected.fare_sum).abs() <= 1e-9 * expected.fare_sum.abs().clip(lower=1)).all()
    assert ((got.temperature - expected.temperature).abs() <= 1e-9).all()
    assert set(table.column("hour_idx").to_pylist()) == set(day_hours(DATES[0]))
    summary = read_manifest(targets[DATES[0]])["summary"]
    assert summary["rows"] == table.num_rows and summary["rides"] == len(rides) == summary["rows_in"]


def test_one_launch_commits_one_version_per_date_and_skips_committed_ones(events, tmp_path):
    targets = _targets(tmp_path)
    first = build_aggregates(events, targets, "duckdb", check_parity_on_other_engine=False)
    assert sorted(first["dates"]) == DATES
    assert all(read_manifest(targets[d])["summary"]["date"] == d for d in DATES)
    committed_at = {d: read_manifest(targets[d])["committed_at"] for d in DATES}
    again = build_aggregates(events, targets, "duckdb", check_parity_on_other_engine=False)
    assert again == first and {d: read_manifest(targets[d])["committed_at"] for d in DATES} == committed_at


def test_a_ride_events_version_of_another_date_is_rejected(events, tmp_path):
    with pytest.raises(
        DataRejected, match=r"partition 2026-03-10: rule input_date: .* holds ride_events of '2026-03-09'"
    ):
        build_aggregates({DATES[1]: events[DATES[0]]}, _targets(tmp_path, DATES[1:]), "duckdb")
    assert read_manifest(_targets(tmp_path, DATES[1:])[DATES[1]]) is None


def test_the_parity_sample_is_fixed_by_the_date():
    cities, hours = parity_sample(DATES[0])
    assert len(cities) == PARITY_CITIES and set(cities) <= set(CITIES)
    assert len(hours) == PARITY_HOURS and set(hours) <= set(day_hours(DATES[0]))
    assert parity_sample(DATES[0]) == (cities, hours)
    assert parity_sample(DATES[1]) != (cities, hours)


def _drifting_check_engine(monkeypatch, factor: float) -> None:
    """The check engine is DuckDB too, but its fare sums drift by ``factor``: a dialect slip to catch."""
    real = sql_session

    @contextmanager
    def sessions(engine, spark=None):
        with real("duckdb") as session:
            if sessions.opened:
                query = session.query
                session.query = lambda sql: _scaled(query(sql), "fare_sum", factor)
                session.engine = "spark"
            sessions.opened += 1
            yield session

    sessions.opened = 0
    monkeypatch.setattr(aggregates_module, "sql_session", sessions)


def _scaled(table: pa.Table, column: str, factor: float) -> pa.Table:
    if column not in table.column_names:
        return table
    index = table.schema.get_field_index(column)
    return table.set_column(index, table.schema.field(index), pc.multiply(table.column(column), factor))


def test_parity_passes_within_tolerance_and_names_the_cells_that_drift(events, tmp_path, monkeypatch):
    _drifting_check_engine(monkeypatch, 1 + 1e-12)
    close = build_aggregates(events, _targets(tmp_path / "close", DATES[:1]), "duckdb")["dates"][DATES[0]]
    report = close["engine_parity"]
    cities, hours = parity_sample(DATES[0])
    assert report["checked"] and report["engines"] == ["duckdb", "spark"]
    assert report["sample"] == {"cities": cities, "hours": hours}
    assert report["rows_compared"] == PARITY_CITIES * PARITY_HOURS
    assert report["cells_compared"] == PARITY_CITIES * PARITY_HOURS * 7 and report["cells_differing"] == 0
    assert 0 < report["max_relative_diff"] <= 1e-9
    outcome = ENGINE_PARITY.evaluate("city_hour_aggregates", {DATES[0]: close})
    assert outcome.passed and "duckdb vs spark: 84 cells" in outcome.describe()

    _drifting_check_engine(monkeypatch, 1 + 1e-6)
    drifted = build_aggregates(events, _targets(tmp_path / "drift", DATES[:1]), "duckdb")["dates"][DATES[0]]
    report = drifted["engine_parity"]
    assert report["cells_differing"] == PARITY_CITIES * PARITY_HOURS  # every sampled fare sum, nothing else
    assert {m["column"] for m in report["mismatches"]} == {"fare_sum"}
    outcome = ENGINE_PARITY.evaluate("city_hour_aggregates", {DATES[0]: drifted})
    assert not outcome.passed
    (violation,) = outcome.violations
    assert violation.startswith(
        f"city_hour_aggregates {DATES[0]}: rule engine_parity: duckdb vs spark differ on 12 of 84 cells beyond 1e-09"
    )
    assert "fare_sum at city=" in violation and "hour_idx=" in violation


def _counted_check_queries(monkeypatch) -> list[str]:
    """The SQL the check engine (DuckDB here, standing in for Spark) is asked, in order."""
    real, asked = sql_session, []

    @contextmanager
    def sessions(engine, spark=None):
        with real("duckdb") as session:
            if sessions.opened:
                query = session.query
                session.query = lambda sql: asked.append(sql) or query(sql)
            sessions.opened += 1
            yield session

    sessions.opened = 0
    monkeypatch.setattr(aggregates_module, "sql_session", sessions)
    return asked


def test_a_range_is_checked_in_one_query_per_batch_each_date_against_its_own_sample(events, tmp_path, monkeypatch):
    asked = _counted_check_queries(monkeypatch)
    together = build_aggregates(events, _targets(tmp_path / "together"), "duckdb")["dates"]
    assert len(asked) == 1, "two dates, one batch: one query on the other engine"
    for date in DATES:
        report = together[date]["engine_parity"]
        cities, hours = parity_sample(date)
        assert report["sample"] == {"cities": cities, "hours": hours}
        assert report["rows_compared"] == PARITY_CITIES * PARITY_HOURS and report["cells_differing"] == 0

    monkeypatch.setattr(aggregates_module, "BATCH_DATES", 1)
    asked = _counted_check_queries(monkeypatch)
    apart = build_aggregates(events, _targets(tmp_path / "apart"), "duckdb")["dates"]
    assert len(asked) == len(DATES)
    assert {d: apart[d]["engine_parity"] for d in DATES} == {d: together[d]["engine_parity"] for d in DATES}


@pytest.mark.slow
def test_spark_and_duckdb_aggregate_a_day_identically_and_the_check_says_so(events, tmp_path):
    targets = _targets(tmp_path, DATES[:1])
    summary = build_aggregates(events, targets, "spark")["dates"][DATES[0]]
    report = summary["engine_parity"]
    assert report["engines"] == ["spark", "duckdb"] and report["cells_differing"] == 0
    assert report["rows_compared"] == PARITY_CITIES * PARITY_HOURS
    reference = _targets(tmp_path / "duckdb", DATES[:1])
    build_aggregates(events, reference, "duckdb", check_parity_on_other_engine=False)
    spark_table, duckdb_table = read_aggregates(targets[DATES[0]]), read_aggregates(reference[DATES[0]])
    assert spark_table.select(["city", "hour_idx", "rides", "cancelled", "completed"]).equals(
        duckdb_table.select(["city", "hour_idx", "rides", "cancelled", "completed"])
    )


def test_the_entry_point_parses_params_and_commits(events, tmp_path):
    targets = _targets(tmp_path)
    params = AggregatesParams(rides_uris=events, targets=targets, engine="duckdb", parity=False)
    result = subprocess.run(params.command(sys.executable), capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    for date in DATES:
        manifest = read_manifest(targets[date])
        assert manifest["producer"] == AggregatesParams.module and manifest["summary"]["rows"] == len(CITIES) * 24
