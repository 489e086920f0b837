"""The pipeline's storage and landing zone on S3 (moto's server mode on 127.0.0.1), through Dagster."""

import pytest

from mltrain_assets.artifacts import filesystem, read_manifest, read_table
from mltrain_assets.cli import demo
from mltrain_assets.landing import landed_days
from mltrain_assets.pipelines.demand.contract import FEATURES_WINDOW
from mltrain_assets.simulate import simulate

pytestmark = pytest.mark.services
DATE = "2026-05-20"
FIRST = FEATURES_WINDOW.first(DATE)


def test_ingest_and_features_on_s3(mltrain_home, s3_endpoint, monkeypatch):
    landing, storage = "s3://mltrain/landing", "s3://mltrain/storage"
    monkeypatch.setenv("MLTRAIN_LANDING_URI", landing)
    monkeypatch.setenv("MLTRAIN_STORAGE_URI", storage)
    monkeypatch.setenv("MLTRAIN_SQL_ENGINE", "duckdb")  # Spark here has no s3a connector,
    monkeypatch.setenv("MLTRAIN_ENGINE_PARITY", "false")  # so it cannot re-check DuckDB on s3:// either
    simulate("rides", landing, FIRST, DATE, cities=["nyc"], volume=8_000)
    assert [d.date for d in landed_days(landing, "rides")][-1] == DATE

    ingest = demo.execute("ride_events_job", "ride_events", partition_range=(FIRST, DATE))
    assert ingest.success, ingest.error
    features = demo.execute("demand_features_job", "features", partition_key=DATE)
    assert features.success, features.error
    uri = features.materializations["city_demand_features"]["uri"]
    assert uri.startswith(f"{storage}/city_demand_features/{DATE}/v=")
    manifest = read_manifest(uri)
    assert manifest["rows"] == read_table(uri, "features.parquet").num_rows > 0
    fs, refs = filesystem(f"{storage}/_refs/ride_events")
    assert len(fs.ls(refs)) == FEATURES_WINDOW.days, "one reference per ingested day, on S3"

    again = demo.execute("demand_features_job", "features", partition_key=DATE)
    assert again.materializations["city_demand_features"]["reused_committed_version"] is True
    assert again.materializations["city_demand_features"]["uri"] == uri
