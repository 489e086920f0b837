"""One real Dagster webserver + daemon for the end-to-end tests, on a fresh MLTRAIN_HOME.

History (the trailing windows) is landed and ingested up front; the tests then land new
days and drive the running stack only through its public interfaces.
"""

import dataclasses
import datetime as dt
import os
import sys

import pytest

from mltrain_assets_tests.conftest import SETTINGS, free_port

E2E_CITIES = "nyc,sf"
# The recommendations world of the workload tests (recsys/_world.py), a fifth of the default's events: the
# e2e tests prove orchestration, not model quality; its recommender still clears the AUC gate (0.82) with
# room to spare (0.844-0.849 held out on dates from March to November 2026), and it trains, embeds
# and rebuilds in ~2/3 of the time.
INTERACTIONS = {"volume": 40_000, "users": 3_000, "items": 300}
# Eight days back: within the automation's lookback, clear of the UI's "Latest" (yesterday), and the one
# embeddings partition that landing it completes (D+8's, over D-6..D) is today's, not a partition yet; so
# the automation's work after NEW_DAY lands is the work the tests wait for (it was a 70 s Spark fit more).
NEW_DAY = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=8)).isoformat()
# The backfill test's range: the days just before NEW_DAY (a range of two proves what three did).
BACKFILL_DAYS = 2


@pytest.fixture(scope="package")
def e2e_env(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    for name in SETTINGS:
        mp.delenv(name, raising=False)
    home = tmp_path_factory.mktemp("e2e") / "mltrain"
    mp.setenv("MLTRAIN_HOME", str(home))
    mp.setenv("MLTRAIN_CITIES", E2E_CITIES)
    # The orchestration is under test here; Spark SQL features are proven in the pipeline tests.
    mp.setenv("MLTRAIN_SQL_ENGINE", "duckdb")
    # Engine parity starts Spark beside DuckDB in every SQL step; it is proven in the demand pipeline tests.
    mp.setenv("MLTRAIN_ENGINE_PARITY", "false")
    # NEW_DAY lies 8 days back (clear of the UI's "Latest"): automation must reach it.
    mp.setenv("MLTRAIN_AUTOMATION_LOOKBACK_DAYS", "30")
    # A landed day is seen within 10 s instead of 30 (at 5 s the ticks cost more CPU than the wait they saved).
    mp.setenv("MLTRAIN_LANDING_SENSOR_INTERVAL_S", "10")
    from mltrain_assets.settings import apply_defaults

    for name, value in apply_defaults().items():
        mp.setenv(name, value)
    yield dict(os.environ)
    mp.undo()


@pytest.fixture(scope="package")
def history(e2e_env):
    """Land and ingest the days before NEW_DAY that the trailing windows need."""
    from mltrain_assets.cli import demo
    from mltrain_assets.pipelines.demand.contract import LANDING_WINDOW as RIDES_WINDOW
    from mltrain_assets.pipelines.recsys.contract import LANDING_WINDOW as INTERACTIONS_WINDOW
    from mltrain_assets.simulate import simulate
    from mltrain_assets.workloads.common.dates import shift

    last = shift(NEW_DAY, -1)
    # Enough rides for NEW_DAY's window and for the backfill of the days before it.
    rides_first = RIDES_WINDOW.first(shift(NEW_DAY, -BACKFILL_DAYS))
    interactions_first = INTERACTIONS_WINDOW.first(NEW_DAY)
    landing = e2e_env["MLTRAIN_LANDING_URI"]
    simulate("rides", landing, rides_first, last, cities=E2E_CITIES.split(","))
    simulate("interactions", landing, interactions_first, last, **INTERACTIONS)
    # The UI's "Latest" partition (yesterday), landed and ingested, for the browser test.
    latest = demo.latest_complete_day()
    simulate("rides", landing, latest, latest, cities=E2E_CITIES.split(","))
    for job, first, end in (
        ("ride_events_job", rides_first, last),
        ("user_interactions_job", interactions_first, last),
        ("ride_events_job", latest, latest),
    ):
        outcome = demo.execute(job, "history", partition_range=(first, end))
        assert outcome.success, outcome.error
    # Steady state: a day's embeddings read D-14..D-8, so they were built a week before; once
    # NEW_DAY lands, training is what remains.
    embeddings = demo.execute("recommender_job", "embeddings", partition_key=NEW_DAY, assets=["interaction_embeddings"])
    assert embeddings.success, embeddings.error
    return {"rides_first": rides_first, "interactions_first": interactions_first, "last": last, "latest": latest}


@pytest.fixture(scope="package")
def stack(e2e_env, history):
    from mltrain_assets.cli.devstack import DevStack

    @dataclasses.dataclass
    class BriskDevStack(DevStack):
        """``mltrain dev``'s stack, its daemon's backfill loop at 2 s (``brisk_daemon``)."""

        def plan(self):
            services = super().plan()
            for service in services:
                if service.name == "dagster-daemon":
                    service.command = [
                        sys.executable,
                        "-m",
                        "mltrain_assets_tests.e2e.brisk_daemon",
                        *service.command[1:],
                    ]
            return services

    # The MLflow UI too: the browser test follows the links between the two UIs. The stack gives its
    # processes (hence the runs the daemon launches) the UI addresses it serves.
    with BriskDevStack(dagster_port=free_port(), mlflow_port=free_port(), mlflow_ui=True) as running:
        assert any(s.name == "dagster-daemon" and "brisk_daemon" in s.command[2] for s in running.services)
        yield running
