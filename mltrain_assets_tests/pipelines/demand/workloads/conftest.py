"""Fixtures of the demand-forecasting workload tests.

``demand_world`` (once per session): the full trailing window of simulated rides for two cities
at the default volume, landed, ingested by the real ingestion workload, aggregated per day and
turned into a committed ``city_demand_features`` version (DuckDB engine), plus the landed day
after (to score forecasts against), and an MLflow store of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from mltrain_assets.artifacts import normalize_uri

DEMAND_DATE = "2026-11-27"  # its holdout week holds Thanksgiving (2026-11-26)
DEMAND_CITIES = ("nyc", "austin")  # the largest and the smallest metro


@dataclass
class DemandWorld:
    root: Path
    date: str
    cities: tuple[str, ...]
    landing_uri: str
    events: dict[str, str]  # date -> committed ride_events version
    aggregates: dict[str, str]  # date -> committed city_hour_aggregates version
    features_uri: str
    tracking_uri: str

    def uri(self, *parts: str) -> str:
        return normalize_uri(str(self.root.joinpath(*parts)))


@pytest.fixture(scope="session")
def demand_world(tmp_path_factory: pytest.TempPathFactory):
    from mltrain_assets.pipelines.demand.contract import input_dates
    from mltrain_assets.pipelines.demand.simulate import write_rides_day
    from mltrain_assets.pipelines.demand.workloads.aggregates import build_aggregates
    from mltrain_assets.pipelines.demand.workloads.features import build_features
    from mltrain_assets.workloads.common.dates import shift
    from mltrain_assets.workloads.ingest.workload import ingest_dates

    root = tmp_path_factory.mktemp("demand_world")
    landing = normalize_uri(str(root / "landing"))
    dates = [*input_dates(DEMAND_DATE), shift(DEMAND_DATE, 1)]
    for date in dates:
        write_rides_day(landing, date, cities=DEMAND_CITIES)
    events = {date: normalize_uri(str(root / "ride_events" / date / "v=test")) for date in dates}
    ingest_dates(landing, "rides", events)
    aggregates = {date: normalize_uri(str(root / "city_hour_aggregates" / date / "v=test")) for date in dates}
    build_aggregates(events, aggregates, "duckdb", check_parity_on_other_engine=False)
    features_uri = normalize_uri(str(root / "city_demand_features" / DEMAND_DATE / "v=test"))
    build_features(
        [aggregates[d] for d in input_dates(DEMAND_DATE)],
        DEMAND_DATE,
        features_uri,
        engine="duckdb",
        check_parity_on_other_engine=False,
    )

    tracking_uri = f"sqlite:///{root}/mlflow.db"
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    patch.setenv("MLTRAIN_MLFLOW_ARTIFACTS_URI", normalize_uri(str(root / "mlartifacts")))
    try:
        yield DemandWorld(root, DEMAND_DATE, DEMAND_CITIES, landing, events, aggregates, features_uri, tracking_uri)
    finally:
        patch.undo()


@pytest.fixture(scope="session")
def trained_models(demand_world: DemandWorld) -> dict[str, dict]:
    """One trained model per city of the world: the committed summaries of ``train_city``."""
    from mltrain_assets.pipelines.demand.workloads.train import train_city

    return {
        city: train_city(
            demand_world.features_uri, city, demand_world.date, demand_world.uri("city_demand_model", city, "v=1")
        )
        for city in demand_world.cities
    }
