"""Real services: where CI provides them (MLTRAIN_REQUIRE_SERVICES=1) their absence is a failure."""

import datetime as dt
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
    from mltrain_assets.workloads.demand_config import INPUT_DAYS
    from mltrain_assets.workloads.ingest import ingest_day

    first = (dt.date.fromisoformat(date) - dt.timedelta(days=INPUT_DAYS - 1)).isoformat()
    simulate("rides", landing_uri, first, date, cities=list(cities), volume=volume)
    uris = []
    for k in range(INPUT_DAYS):
        day = (dt.date.fromisoformat(first) + dt.timedelta(days=k)).isoformat()
        uri = version_uri(storage_uri, "ride_events", day, "test")
        ingest_day(landing_uri, "rides", day, uri)
        uris.append(uri)
    return uris
