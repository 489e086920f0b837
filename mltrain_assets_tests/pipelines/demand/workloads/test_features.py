"""City-hour demand features: the catalogue, the frame, no look-ahead, incremental by day, one SQL on two engines."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet
import pytest

from mltrain_assets.artifacts import ArtifactWriter, join_uri, normalize_uri, read_manifest, read_table
from mltrain_assets.pipelines.demand.contract import CITIES, FRAME_DAYS, INPUT_DAYS, LAG_DAYS, input_dates
from mltrain_assets.pipelines.demand.params import FeaturesParams
from mltrain_assets.pipelines.demand.simulate import simulate_rides_day
from mltrain_assets.pipelines.demand.workloads.aggregates import AGGREGATES_FILE, build_aggregates
from mltrain_assets.pipelines.demand.workloads.feature_sql import FEATURE_NAMES, LABEL, NAIVE_FEATURE, feature_sql
from mltrain_assets.pipelines.demand.workloads.features import (
    build_features,
    compute_features,
    features_from_events,
    frame_hours,
    read_features,
)
from mltrain_assets.workloads.common.spark import SparkSettings

DATE = "2026-03-10"
NEXT_DAY = "2026-03-11"
VOLUME = 4_000
REPO = Path(__file__).resolve().parents[3]


def _commit_events(root, date: str, table: pa.Table) -> str:
    uri = normalize_uri(str(root / date))
    writer = ArtifactWriter(uri, producer="tests", code_version="test")
    writer.write_table("events.parquet", table)
    writer.commit({"date": date, "rows": table.num_rows})
    return uri


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> dict[str, str]:
    """Committed ``ride_events``-like versions (date -> URI) for the window of DATE and the day after."""
    root = tmp_path_factory.mktemp("ride_events")
    return {
        date: _commit_events(root, date, simulate_rides_day(date, VOLUME)) for date in [*input_dates(DATE), NEXT_DAY]
    }


def _aggregate(root, versions: dict[str, str]) -> dict[str, str]:
    """Committed ``city_hour_aggregates`` versions (date -> URI) of committed ride_events versions."""
    targets = {date: normalize_uri(str(root / "aggregates" / date / uuid.uuid4().hex)) for date in versions}
    build_aggregates(versions, targets, "duckdb", check_parity_on_other_engine=False)
    return targets


@pytest.fixture(scope="module")
def aggregates(events, tmp_path_factory) -> dict[str, str]:
    return _aggregate(tmp_path_factory.mktemp("city_hour_aggregates"), events)


def _events(uri: str) -> pa.Table:
    return read_table(uri, "events.parquet")


def _files(versions: list[str], name: str = AGGREGATES_FILE) -> list[str]:
    return [join_uri(uri, name) for uri in versions]


def _window(versions: dict[str, str], name: str = AGGREGATES_FILE) -> list[str]:
    return _files([versions[d] for d in input_dates(DATE)], name)


@pytest.fixture(scope="module")
def duckdb_features(aggregates) -> pd.DataFrame:
    return compute_features(_window(aggregates), DATE, "duckdb").to_pandas()


@pytest.fixture(scope="module")
def spark():
    """One local Spark session for the module; the workload reuses the active session."""
    from mltrain_assets.workloads.common.spark import spark_session

    session, owned = spark_session(SparkSettings(master="local[2]"), "mltrain-tests")
    yield session
    if owned:
        session.stop()


def _assert_same(left: pd.DataFrame, right: pd.DataFrame, columns, tolerance: float = 1e-6) -> None:
    for column in columns:
        a, b = left[column].to_numpy(float), right[column].to_numpy(float)
        assert np.array_equal(np.isnan(a), np.isnan(b)), f"{column}: NULLs differ"
        both = ~np.isnan(a)
        error = np.abs(a[both] - b[both]) / np.maximum(1.0, np.abs(a[both]))
        assert error.size == 0 or error.max() <= tolerance, f"{column}: differs by {error.max():.2e}"


def test_the_catalogue_has_about_200_features_none_closer_than_24h():
    assert 190 <= len(FEATURE_NAMES) <= 230
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert NAIVE_FEATURE in FEATURE_NAMES and LABEL not in FEATURE_NAMES
    sql = feature_sql(*frame_hours(DATE)[1:])
    lags = [int(n) for n in re.findall(r"LAG\([^,]+, (\d+)\)", sql)]
    frames = re.findall(r"ROWS BETWEEN (\d+) PRECEDING AND (\d+) PRECEDING", sql)
    assert lags and frames
    assert min(lags) >= 24 and min(int(end) for _, end in frames) >= 24
    assert max(lags) <= LAG_DAYS * 24 and max(int(start) for start, _ in frames) < LAG_DAYS * 24
    assert "FOLLOWING" not in sql and "CURRENT ROW" not in sql and "LEAD(" not in sql


def test_the_frame_has_every_city_hour_labelled_days_and_next_day_scoring_rows(duckdb_features, events):
    frame = duckdb_features
    assert list(frame.columns) == ["city", "ts", LABEL, *FEATURE_NAMES]
    assert len(frame) == len(CITIES) * (FRAME_DAYS + 1) * 24
    first = pd.Timestamp(dt.date.fromisoformat(DATE) - dt.timedelta(days=FRAME_DAYS - 1), tz="UTC")
    for _, rows in frame.groupby("city"):
        assert rows.ts.tolist() == list(pd.date_range(first, periods=(FRAME_DAYS + 1) * 24, freq="h"))
        scoring = rows[rows[LABEL].isna()]
        assert scoring.ts.dt.date.astype(str).unique().tolist() == [NEXT_DAY] and len(scoring) == 24
        assert scoring[NAIVE_FEATURE].notna().all()
    assert frame[["city", "ts"]].equals(frame.sort_values(["city", "ts"])[["city", "ts"]])

    # The label is the count of rides requested in the city-hour.
    rides = pa.concat_tables([_events(events[d]) for d in input_dates(DATE)[-2:]]).to_pandas()
    counts = rides[rides.city == "sf"].groupby(rides.requested_at.dt.floor("h")).size()
    labelled = frame[(frame.city == "sf") & frame.ts.isin(counts.index)].set_index("ts")[LABEL]
    assert (labelled == counts.reindex(labelled.index)).all()
    # Yesterday's demand is what the naive feature holds.
    sf = frame[frame.city == "sf"].set_index("ts")
    day = pd.Timestamp(DATE, tz="UTC")
    assert sf.loc[day + pd.Timedelta(hours=24 + 5), NAIVE_FEATURE] == sf.loc[day + pd.Timedelta(hours=5), LABEL]


def test_hours_without_rides_are_zero_demand_rows(events, aggregates, tmp_path):
    quiet_day = input_dates(DATE)[-3]
    table = _events(events[quiet_day])
    without_austin = table.filter(pc.not_equal(table.column("city"), "austin"))
    versions = dict(aggregates)
    versions.update(_aggregate(tmp_path, {quiet_day: _commit_events(tmp_path, quiet_day, without_austin)}))
    frame = compute_features(_window(versions), DATE, "duckdb").to_pandas()
    austin = frame[(frame.city == "austin") & (frame.ts.dt.date.astype(str) == quiet_day)]
    assert len(austin) == 24 and (austin[LABEL] == 0).all()


def test_no_feature_changes_when_the_same_day_changes(events, aggregates, duckdb_features, tmp_path):
    """Doubling one city's rides on day X changes no feature of any row up to the end of X."""
    day_x = input_dates(DATE)[-4]
    table = _events(events[day_x])
    sf = table.filter(pc.equal(table.column("city"), "sf"))
    extra = sf.set_column(0, sf.schema.field(0), pc.binary_join_element_wise(sf.column("ride_id"), "-again", ""))
    versions = dict(aggregates)
    versions.update(_aggregate(tmp_path, {day_x: _commit_events(tmp_path, day_x, pa.concat_tables([table, extra]))}))
    perturbed = compute_features(_window(versions), DATE, "duckdb").to_pandas()

    end_of_x = pd.Timestamp(day_x, tz="UTC") + pd.Timedelta(days=1)
    before = duckdb_features.ts < end_of_x
    _assert_same(duckdb_features[before], perturbed[before], FEATURE_NAMES, tolerance=0.0)
    # The label of day X did change, and the next day's lagged features see it.
    is_sf_x = (duckdb_features.city == "sf") & before & (duckdb_features.ts >= end_of_x - pd.Timedelta(days=1))
    assert (perturbed.loc[is_sf_x, LABEL] > duckdb_features.loc[is_sf_x, LABEL]).all()
    is_sf_next = (duckdb_features.city == "sf") & (duckdb_features.ts >= end_of_x)
    is_sf_next &= duckdb_features.ts < end_of_x + pd.Timedelta(days=1)
    assert (perturbed.loc[is_sf_next, NAIVE_FEATURE] > duckdb_features.loc[is_sf_next, NAIVE_FEATURE]).all()


def test_scoring_rows_do_not_read_the_day_they_forecast(aggregates, duckdb_features):
    with_next_day = _window(aggregates) + _files([aggregates[NEXT_DAY]])
    frame = compute_features(with_next_day, DATE, "duckdb").to_pandas()
    _assert_same(duckdb_features, frame, [LABEL, *FEATURE_NAMES], tolerance=0.0)


def test_features_from_daily_aggregates_equal_the_one_pass_features_over_raw_rides(events, duckdb_features):
    """Incremental by day changes no number: per-day aggregates give the features of one pass over 35 raw days."""
    one_pass = features_from_events(_window(events, "events.parquet"), DATE, "duckdb").to_pandas()
    assert one_pass[["city", "ts"]].equals(duckdb_features[["city", "ts"]])
    _assert_same(one_pass, duckdb_features, [LABEL, *FEATURE_NAMES], tolerance=1e-9)


@pytest.mark.slow
def test_duckdb_and_spark_compute_the_same_numbers(events, aggregates, duckdb_features, spark):
    frame = compute_features(_window(aggregates), DATE, "spark").to_pandas()
    assert frame[["city", "ts"]].equals(duckdb_features[["city", "ts"]])
    _assert_same(duckdb_features, frame, [LABEL, *FEATURE_NAMES], tolerance=1e-9)
    # The one-pass reference on Spark: the same numbers again.
    one_pass = features_from_events(_window(events, "events.parquet"), DATE, "spark").to_pandas()
    _assert_same(duckdb_features, one_pass, [LABEL, *FEATURE_NAMES], tolerance=1e-9)


def test_build_features_commits_a_sorted_table_and_a_summary(aggregates, tmp_path):
    versions = [aggregates[d] for d in input_dates(DATE)]
    out = normalize_uri(str(tmp_path / "features"))
    summary = build_features(versions, DATE, out, engine="duckdb", check_parity_on_other_engine=False)
    table = read_features(out)
    manifest = read_manifest(out)
    assert manifest["summary"] == summary and manifest["code_version"] == FeaturesParams.code_version
    assert summary["rows"] == table.num_rows == len(CITIES) * (FRAME_DAYS + 1) * 24
    assert summary["n_features"] == len(FEATURE_NAMES)
    assert summary["cities"] == sorted(CITIES) and summary["engine"] == "duckdb"
    assert summary["first_ts"].startswith((dt.date.fromisoformat(DATE) - dt.timedelta(days=FRAME_DAYS - 1)).isoformat())
    assert summary["last_ts"].startswith(f"{NEXT_DAY}T23:00")
    assert summary["n_inputs"] == INPUT_DAYS and summary["input_dates_missing"] == []
    assert summary["engine_parity"] == {
        "checked": False,
        "reason": "engine parity is switched off (MLTRAIN_ENGINE_PARITY=false)",
    }
    assert set(manifest["inputs"]) == set(versions)
    assert read_features(out, "nyc").num_rows == (FRAME_DAYS + 1) * 24

    # A partial window is computed (missing days count as zero demand) and said so.
    partial = build_features(
        versions[1:],
        DATE,
        normalize_uri(str(tmp_path / "partial")),
        engine="duckdb",
        check_parity_on_other_engine=False,
    )
    assert partial["input_dates_missing"] == [input_dates(DATE)[0]]


def test_features_refuse_inputs_that_are_not_aggregates(events, tmp_path):
    with pytest.raises(FileNotFoundError, match="is it a city_hour_aggregates version"):
        build_features([events[DATE]], DATE, normalize_uri(str(tmp_path / "f")), engine="duckdb")


@pytest.mark.slow
def test_build_features_checks_every_cell_on_the_other_engine(aggregates, duckdb_features, spark, tmp_path):
    out = normalize_uri(str(tmp_path / "features"))
    summary = build_features([aggregates[d] for d in input_dates(DATE)], DATE, out, engine="duckdb")
    parity = summary["engine_parity"]
    assert parity["checked"] and parity["engines"] == ["duckdb", "spark"]
    assert parity["rows_compared"] == len(duckdb_features)
    assert parity["cells_compared"] == len(duckdb_features) * (1 + len(FEATURE_NAMES))
    assert parity["cells_differing"] == 0 and parity["max_relative_diff"] <= 1e-9 and parity["mismatches"] == []


def test_the_frame_starts_on_the_first_day_of_the_input_window():
    grid_start, frame_start, label_end, frame_end = frame_hours(DATE)
    first_input = dt.datetime.fromisoformat(input_dates(DATE)[0]).replace(tzinfo=dt.UTC)
    assert grid_start == int(first_input.timestamp()) // 3600
    assert frame_start - grid_start == LAG_DAYS * 24
    assert label_end - frame_start + 1 == FRAME_DAYS * 24 and frame_end - label_end == 24


def test_spark_refuses_s3_inputs_and_points_to_duckdb():
    uri = "s3://mltrain/city_hour_aggregates/x/aggregates.parquet"
    with pytest.raises(ValueError, match="duckdb engine") as refused:
        compute_features([uri], DATE, "spark", SparkSettings(s3a=False))
    assert uri in str(refused.value)


def test_an_unknown_engine_is_refused():
    with pytest.raises(ValueError, match=r"engine must be one of \('spark', 'duckdb'\), not 'polars'"):
        compute_features([], DATE, "polars")


def test_the_entry_point_parses_params_and_commits(aggregates, tmp_path):
    """``python -m <module> --params JSON``, exactly as the control plane launches it."""
    out = normalize_uri(str(tmp_path / "features"))
    params = FeaturesParams(
        date=DATE, aggregates_uris=tuple(aggregates[d] for d in input_dates(DATE)), engine="duckdb", parity=False
    )
    result = subprocess.run(
        params.with_output(out).command(sys.executable), capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stderr
    summary = read_manifest(out)["summary"]
    assert summary["rows"] == len(CITIES) * (FRAME_DAYS + 1) * 24 and summary["engine"] == "duckdb"
    assert summary["n_inputs"] == INPUT_DAYS and summary["input_dates_missing"] == []
    assert read_manifest(out)["producer"] == FeaturesParams.module


@pytest.mark.slow
def test_duckdb_reads_and_writes_s3(aggregates, s3_endpoint, duckdb_features):
    prefix = f"s3://mltrain/{uuid.uuid4().hex}"  # the S3 endpoint lives for the whole session
    s3_versions = []
    for date in input_dates(DATE):
        uri = f"{prefix}/city_hour_aggregates/{date}/v=test"
        writer = ArtifactWriter(uri, producer="tests", code_version="test")
        writer.write_table(AGGREGATES_FILE, read_table(aggregates[date], AGGREGATES_FILE))
        writer.commit({"date": date})
        s3_versions.append(uri)
    out = f"{prefix}/city_demand_features/{DATE}/v=test"
    summary = build_features(s3_versions, DATE, out, engine="duckdb", check_parity_on_other_engine=False)
    assert summary["rows"] == len(duckdb_features)
    _assert_same(duckdb_features, read_features(out).to_pandas(), [LABEL, *FEATURE_NAMES], tolerance=0.0)


def test_an_aggregates_file_changed_after_its_commit_is_refused_and_quarantined(aggregates, tmp_path):
    from mltrain_assets.artifacts import ArtifactCorrupt, filesystem, quarantine_reason

    # The last day aggregated again, its file then overwritten in place by valid parquet with other values.
    day = input_dates(DATE)[-1]
    window = _aggregate(tmp_path, {day: _commit_events(tmp_path / "ev", day, simulate_rides_day(day, VOLUME))})
    fs, path = filesystem(window[day])
    table = read_table(window[day], AGGREGATES_FILE)
    doubled = table.set_column(3, table.schema.field(3), pc.multiply(table.column("rides"), 2))
    writer_sink = pa.BufferOutputStream()
    pa.parquet.write_table(doubled, writer_sink)
    fs.pipe_file(f"{path}/{AGGREGATES_FILE}", writer_sink.getvalue().to_pybytes())
    versions = [aggregates[d] for d in input_dates(DATE)[:-1]] + [window[day]]
    with pytest.raises(ArtifactCorrupt, match=rf"{window[day]}: aggregates\.parquet has .*the version was quarantined"):
        build_features(versions, DATE, normalize_uri(str(tmp_path / "f")), engine="duckdb")
    assert read_manifest(window[day]) is None and AGGREGATES_FILE in quarantine_reason(window[day])
    assert read_manifest(normalize_uri(str(tmp_path / "f"))) is None
