"""The production instance profile on a real PostgreSQL (Debian's postgresql-15, started by .ci/run)."""

import os

import psycopg2
import pytest

from mltrain_assets.cli import demo
from mltrain_assets.simulate import simulate
from mltrain_assets_tests.services.conftest import service_missing

pytestmark = pytest.mark.services

PG = {
    "MLTRAIN_PG_HOST": os.environ.get("MLTRAIN_PG_HOST", "127.0.0.1"),
    "MLTRAIN_PG_PORT": os.environ.get("MLTRAIN_PG_PORT", "5432"),
    "MLTRAIN_PG_USER": os.environ.get("MLTRAIN_PG_USER", "mltrain"),
    "MLTRAIN_PG_PASSWORD": os.environ.get("MLTRAIN_PG_PASSWORD", "mltrain"),
}


@pytest.fixture
def postgres_db():
    """A fresh database on the running server, dropped afterwards."""
    try:
        admin = psycopg2.connect(
            host=PG["MLTRAIN_PG_HOST"],
            port=PG["MLTRAIN_PG_PORT"],
            user=PG["MLTRAIN_PG_USER"],
            password=PG["MLTRAIN_PG_PASSWORD"],
            dbname="postgres",
            connect_timeout=3,
        )
    except psycopg2.OperationalError as exc:
        service_missing(
            f"PostgreSQL not reachable at {PG['MLTRAIN_PG_HOST']}:{PG['MLTRAIN_PG_PORT']} ({exc}); .ci/run starts it"
        )
    admin.autocommit = True
    name = f"mltrain_test_{os.getpid()}"
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        cur.execute(f"CREATE DATABASE {name}")
    yield name
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


def test_runs_and_materializations_are_stored_in_postgres(mltrain_home, postgres_db, monkeypatch):
    for key, value in {
        **PG,
        "MLTRAIN_PG_DB": postgres_db,
        "MLTRAIN_DAGSTER_YAML": "deploy/dagster.postgres.yaml",
    }.items():
        monkeypatch.setenv(key, value)
    simulate("rides", f"file://{mltrain_home}/landing", "2026-04-01", "2026-04-01", volume=5_000)
    outcome = demo.execute("ride_events_job", "ride_events", partition_key="2026-04-01")
    assert outcome.success, outcome.error

    with (
        psycopg2.connect(
            host=PG["MLTRAIN_PG_HOST"],
            port=PG["MLTRAIN_PG_PORT"],
            user=PG["MLTRAIN_PG_USER"],
            password=PG["MLTRAIN_PG_PASSWORD"],
            dbname=postgres_db,
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (outcome.run_id,))
        assert cur.fetchone() == ("SUCCESS",)
        cur.execute(
            "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'"
            " AND asset_key LIKE '%%ride_events%%'",
            (outcome.run_id,),
        )
        assert cur.fetchone()[0] == 1
