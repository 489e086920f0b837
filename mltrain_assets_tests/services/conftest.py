"""Real services: where CI provides them (MLTRAIN_REQUIRE_SERVICES=1) their absence is a failure."""

import os

import pytest

from mltrain_assets.artifacts import version_uri


def service_missing(message: str):
    if os.environ.get("MLTRAIN_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def ingested_window(landing_uri: str, storage_uri: str, date: str, cities=("nyc",), volume=40_000) -> list[str]:
    """Simulate and ingest the ride days one features partition reads; returns their version URIs."""
    from mltrain_assets.pipelines.demand.contract import input_dates
    from mltrain_assets.simulate import simulate
    from mltrain_assets.workloads.ingest.workload import ingest_day

    days = input_dates(date)
    simulate("rides", landing_uri, days[0], date, cities=list(cities), volume=volume)
    uris = []
    for day in days:
        uri = version_uri(storage_uri, "ride_events", day, "test")
        ingest_day(landing_uri, "rides", day, uri)
        uris.append(uri)
    return uris


def aggregated_window(landing_uri: str, storage_uri: str, date: str, cities=("nyc",), volume=40_000) -> list[str]:
    """The committed ``city_hour_aggregates`` versions one features partition reads (ingested, then aggregated)."""
    from mltrain_assets.pipelines.demand.contract import input_dates
    from mltrain_assets.pipelines.demand.workloads.aggregates import build_aggregates

    days = input_dates(date)
    rides = ingested_window(landing_uri, storage_uri, date, cities, volume)
    aggregates = {day: version_uri(storage_uri, "city_hour_aggregates", day, "test") for day in days}
    build_aggregates(dict(zip(days, rides, strict=True)), aggregates, "duckdb", check_parity_on_other_engine=False)
    return [aggregates[day] for day in days]
