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
    from mltrain_assets.simulate import simulate
    from mltrain_assets.workloads.demand.contract import input_dates
    from mltrain_assets.workloads.ingest.workload import ingest_day

    days = input_dates(date)
    simulate("rides", landing_uri, days[0], date, cities=list(cities), volume=volume)
    uris = []
    for day in days:
        uri = version_uri(storage_uri, "ride_events", day, "test")
        ingest_day(landing_uri, "rides", day, uri)
        uris.append(uri)
    return uris
