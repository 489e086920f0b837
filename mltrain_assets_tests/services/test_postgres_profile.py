"""The production instance profile on a real PostgreSQL (Debian's postgresql-15, started by .ci/run)."""

import os
import types

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


def test_six_runs_started_at_once_on_a_brand_new_postgres_instance_all_succeed(tmp_path, postgres_db, monkeypatch):
    """The production profile's pool race: `mltrain init` on an empty database, then six run workers at once."""
    from dagster import DagsterInstance

    from mltrain_assets_tests.core.pooled_runs import most_at_once, run_mltrain_init, start_runs_at_once

    env = {**PG, "MLTRAIN_PG_DB": postgres_db, "MLTRAIN_DAGSTER_YAML": "deploy/dagster.postgres.yaml"}
    dagster_home = tmp_path / "dagster_home"
    printed = run_mltrain_init(dagster_home, tmp_path / "mltrain_home", env)
    assert "pool slot claims: exclusive (trigger mltrain_keep_slot_claim on concurrency_slots, postgresql)" in printed
    assert "pool registry: 1 slot(s) from MLTRAIN_POOL_LIMITS (set)" in printed
    assert "pool spark: 4 slot(s) from default_limit (initialized)" in printed

    outcome = start_runs_at_once(6, dagster_home, tmp_path / "runs", env)
    for run in outcome["runs"]:
        assert run["returncode"] == 0 and run["run"]["success"], run["stderr"]
    assert len(outcome["spans"]) == 18
    assert most_at_once(outcome["spans"], "registry") == 1, "registry has one slot (the claim guard keeps it)"
    assert most_at_once(outcome["spans"], "spark") <= 4 and most_at_once(outcome["spans"], "training") <= 4
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        limits = {p.name: (p.limit, p.from_default) for p in instance.event_log_storage.get_pool_limits()}
        assert limits == {"registry": (1, False), "spark": (4, True), "training": (4, True)}
        assert instance.get_run_records() and all(r.dagster_run.is_success for r in instance.get_run_records())


def test_a_burst_of_claims_on_one_slot_lets_one_step_in_at_a_time(postgres_db):
    """Dagster's claim (SELECT a free slot, then UPDATE it, each autocommitted) let two of six
    simultaneous claimers into a one-slot pool in 19 and 29 rounds of 100 here; the guard none."""
    from dagster_postgres.event_log import PostgresEventLogStorage

    from mltrain_assets.core.slot_claims import GUARD, guard_slot_claims
    from mltrain_assets_tests.core.pooled_runs import claim_at_once

    storage = PostgresEventLogStorage(
        f"postgresql+psycopg2://{PG['MLTRAIN_PG_USER']}:{PG['MLTRAIN_PG_PASSWORD']}"
        f"@{PG['MLTRAIN_PG_HOST']}:{PG['MLTRAIN_PG_PORT']}/{postgres_db}"
    )
    try:
        storage.set_concurrency_slots("registry", 1)
        instance = types.SimpleNamespace(event_log_storage=storage)
        guard = guard_slot_claims(instance)
        assert (guard.database, guard.installed) == ("postgresql", True)
        assert guard_slot_claims(instance).installed, "installing again replaces it"
        with storage.index_connection() as conn:
            triggers = conn.exec_driver_sql(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = 'concurrency_slots'::regclass AND NOT tgisinternal"
            ).scalars()
            assert list(triggers) == [GUARD]

        rounds = claim_at_once(storage, "registry", claimers=6, rounds=30)
        assert [r["first"] for r in rounds] == [1] * 30, [r for r in rounds if r["first"] != 1]
        assert all(r["most"] == 1 and len(r["holders"]) == 1 for r in rounds), rounds
        assert [r["served"] for r in rounds] == [6] * 30, "every claimer got the slot in turn"
        assert not storage.get_concurrency_run_ids(), "every slot was given back"
    finally:
        storage.dispose()
