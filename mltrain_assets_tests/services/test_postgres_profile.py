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

    from mltrain_assets_tests.instance.pooled_runs import most_at_once, run_mltrain_init, start_runs_at_once

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

    from mltrain_assets.instance.slot_claims import GUARD, guard_slot_claims
    from mltrain_assets_tests.instance.pooled_runs import claim_at_once

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


# A login role that does not own Dagster's tables (as a code location's role often is); .ci/run creates it.
RUNNER = {
    "MLTRAIN_PG_USER": os.environ.get("MLTRAIN_PG_RUNNER_USER", "mltrain_runner"),
    "MLTRAIN_PG_PASSWORD": os.environ.get("MLTRAIN_PG_RUNNER_PASSWORD", "mltrain_runner"),
}


def _url(db: str, user: dict[str, str] = PG) -> str:
    return (
        f"postgresql+psycopg2://{user['MLTRAIN_PG_USER']}:{user['MLTRAIN_PG_PASSWORD']}"
        f"@{PG['MLTRAIN_PG_HOST']}:{PG['MLTRAIN_PG_PORT']}/{db}"
    )


def _connect(db: str, user: dict[str, str] = PG):
    return psycopg2.connect(
        host=PG["MLTRAIN_PG_HOST"],
        port=PG["MLTRAIN_PG_PORT"],
        user=user["MLTRAIN_PG_USER"],
        password=user["MLTRAIN_PG_PASSWORD"],
        dbname=db,
        connect_timeout=3,
    )


@pytest.fixture
def slots(postgres_db):
    """Dagster's event log storage on a fresh database (the owner's), with a one-slot ``registry`` pool."""
    from dagster_postgres.event_log import PostgresEventLogStorage

    storage = PostgresEventLogStorage(_url(postgres_db))
    storage.set_concurrency_slots("registry", 1)
    yield storage
    storage.dispose()


def _holders(storage) -> set[str]:
    with storage.index_connection() as conn:
        return set(conn.exec_driver_sql("SELECT run_id FROM concurrency_slots WHERE run_id IS NOT NULL").scalars())


def _rows_updated(storage, sql: str) -> int:
    with storage.index_connection() as conn:
        return conn.exec_driver_sql(sql).rowcount


@pytest.mark.parametrize("guarded", [True, False], ids=["guarded", "unguarded"])
def test_on_postgres_a_claim_over_a_held_slot_changes_no_row(slots, guarded):
    from mltrain_assets.instance.slot_claims import guard_slot_claims

    if guarded:
        assert guard_slot_claims(types.SimpleNamespace(event_log_storage=slots)).installed
    assert slots.claim_concurrency_slot("registry", "run-a", "register").is_claimed
    # Dagster's second statement, as a racing claimer that read the slot free would send it.
    over = _rows_updated(slots, "UPDATE concurrency_slots SET run_id = 'run-b', step_key = 'register'")
    assert over == (0 if guarded else 1)
    assert _holders(slots) == {"run-a" if guarded else "run-b"}
    assert _rows_updated(slots, "UPDATE concurrency_slots SET deleted = true") == 1, "a lowered limit marks it"
    assert _rows_updated(slots, "UPDATE concurrency_slots SET run_id = NULL, step_key = NULL, deleted = false") == 1
    assert not _holders(slots), "freed"


@pytest.mark.parametrize("guarded", [True, False], ids=["guarded", "unguarded"])
def test_on_postgres_claimers_that_read_the_same_free_slot(postgres_db, slots, guarded):
    """Dagster's own claim, three claimers interleaved (each SELECTs the free slot before any UPDATEs):
    without the trigger all three are let into the one slot, with it exactly one."""
    from dagster_postgres.event_log import PostgresEventLogStorage

    from mltrain_assets.instance.slot_claims import guard_slot_claims
    from mltrain_assets_tests.instance.claim_race import claim_interleaved_in_threads

    if guarded:
        assert guard_slot_claims(types.SimpleNamespace(event_log_storage=slots)).installed
    statuses = claim_interleaved_in_threads(lambda: PostgresEventLogStorage(_url(postgres_db)), "registry", 3)
    if guarded:
        assert sorted(statuses) == ["BLOCKED", "BLOCKED", "CLAIMED"], statuses
        assert _holders(slots) == {f"run-{statuses.index('CLAIMED')}"}
    else:
        assert statuses == ["CLAIMED"] * 3, "Dagster's claim lets every claimer into the one slot"


def test_the_install_gives_up_within_its_lock_timeout_and_claims_go_on(postgres_db, slots):
    """A transaction holding a lock on the slots table (as an open UPDATE does): the trigger's table
    lock would queue every claim behind it, so the install waits ``lock_timeout``, then reports."""
    from mltrain_assets.instance.slot_claims import guard_slot_claims

    instance = types.SimpleNamespace(event_log_storage=slots)
    holder = _connect(postgres_db)
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE concurrency_slots IN ROW EXCLUSIVE MODE")
            guard = guard_slot_claims(instance, lock_timeout=0.5)
            assert not guard.installed
            assert (
                guard.line()
                .splitlines()[0]
                .startswith(
                    "pool slot claims: NOT guarded: trigger mltrain_keep_slot_claim is not on concurrency_slots; "
                    "no lock on concurrency_slots within 0.5s (a long transaction holds it; claims were not held up): "
                    "run `mltrain init --pools` again (canceling statement due to lock timeout)"
                )
            )
            assert slots.claim_concurrency_slot("registry", "run-a", "register").is_claimed, "nothing left queued"
    finally:
        holder.rollback()
        holder.close()
    assert guard_slot_claims(instance).installed, "the next start installs it"


@pytest.fixture
def runner_db(postgres_db, tmp_path, monkeypatch):
    """The database with Dagster's tables created by their owner and the runner role granted the rows
    only (no trigger: the owner never ran `mltrain init`); the runner's DAGSTER_HOME."""
    from dagster import DagsterInstance

    try:
        _connect(postgres_db, RUNNER).close()
    except psycopg2.OperationalError as exc:
        service_missing(f"PostgreSQL role {RUNNER['MLTRAIN_PG_USER']} cannot log in ({exc}); .ci/run creates it")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((demo.REPO_ROOT / "deploy" / "dagster.postgres.yaml").read_text())
    with monkeypatch.context() as owner:
        for key, value in {**PG, "MLTRAIN_PG_DB": postgres_db}.items():
            owner.setenv(key, value)
        with DagsterInstance.from_config(str(home)) as instance:
            instance.get_runs()  # every storage created its tables
    with _connect(postgres_db) as conn, conn.cursor() as cur:
        role = RUNNER["MLTRAIN_PG_USER"]
        cur.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
        cur.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")
    conn.close()
    env = {**PG, **RUNNER, "MLTRAIN_PG_DB": postgres_db, "MLTRAIN_DAGSTER_YAML": "deploy/dagster.postgres.yaml"}
    return postgres_db, home, env


def test_a_role_that_does_not_own_dagsters_tables_still_starts_and_names_the_missing_grant(runner_db, tmp_path):
    from mltrain_assets_tests.instance.pooled_runs import run_mltrain_init

    _, home, env = runner_db
    printed = run_mltrain_init(home, tmp_path / "mltrain_home", env)
    assert (
        "pool slot claims: NOT guarded: trigger mltrain_keep_slot_claim is not on concurrency_slots; "
        "role mltrain_runner cannot create a trigger on concurrency_slots (needs ownership of the table, owned by "
        "mltrain, or TRIGGER on concurrency_slots, CREATE on schema public: permission denied for schema public): "
        "run `mltrain init --pools` once as mltrain; registrations are kept one at a time by their own lock instead "
        "(instance/exclusive.py)\nDagster schema: revision "
    ) in printed
    assert "pool registry: 1 slot(s) from MLTRAIN_POOL_LIMITS (set)" in printed, "the pools are written all the same"

    # The owner installs it once (a migration job); the runner's next start finds it in place.
    owner_printed = run_mltrain_init(home, tmp_path / "mltrain_home", {**env, **PG})
    assert "pool slot claims: exclusive (trigger mltrain_keep_slot_claim on concurrency_slots, postgresql)\n" in (
        owner_printed
    )
    again = run_mltrain_init(home, tmp_path / "mltrain_home", env)
    assert (
        "pool slot claims: exclusive (trigger mltrain_keep_slot_claim on concurrency_slots, postgresql); not "
        "replaced by this start: role mltrain_runner cannot create a trigger on concurrency_slots (needs ownership "
        "of the table, owned by mltrain, or TRIGGER on concurrency_slots, CREATE on schema public, ownership of "
        "function mltrain_keep_slot_claim() (mltrain): permission denied for schema public): run "
        "`mltrain init --pools` once as mltrain\n"
    ) in again

    # Someone disabled it: a start that cannot replace it says so (the owner's next start re-enables it).
    db = env["MLTRAIN_PG_DB"]
    with _connect(db) as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE concurrency_slots DISABLE TRIGGER mltrain_keep_slot_claim")
    conn.close()
    disabled = run_mltrain_init(home, tmp_path / "mltrain_home", env)
    assert (
        "pool slot claims: NOT guarded: trigger mltrain_keep_slot_claim on concurrency_slots is disabled (ALTER TABLE "
        "concurrency_slots ENABLE TRIGGER mltrain_keep_slot_claim); role mltrain_runner cannot create a trigger"
    ) in disabled
    assert "pool slot claims: exclusive (" in run_mltrain_init(home, tmp_path / "mltrain_home", {**env, **PG})


# One registration run (an in-process run on $DAGSTER_HOME as the runner role): its step holds the
# registration lock (the decorator on `register_and_promote`). The first in waits, inside the lock,
# until PostgreSQL shows the other registration waiting for it; each writes its span.
REGISTER = r"""
import json, os, sys, time
from pathlib import Path
import psycopg2
from dagster import DagsterInstance, asset, materialize
from mltrain_assets.instance.exclusive import advisory_key, exclusive_step
from mltrain_assets.resources.tracking import REGISTRY_POOL

spans, gate = Path(sys.argv[1]), Path(sys.argv[2])
key = advisory_key(f"mltrain.{REGISTRY_POOL}")

def other_waits_for_the_lock() -> bool:
    conn = psycopg2.connect(host=os.environ["MLTRAIN_PG_HOST"], port=os.environ["MLTRAIN_PG_PORT"],
        user=os.environ["MLTRAIN_PG_USER"], password=os.environ["MLTRAIN_PG_PASSWORD"], dbname=os.environ["MLTRAIN_PG_DB"])
    conn.autocommit = True
    deadline = time.monotonic() + 60
    with conn.cursor() as cur:
        while time.monotonic() < deadline:
            cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objsubid = 1"
                        " AND classid::bigint = %s AND objid::bigint = %s", ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF))
            if cur.fetchone()[0]:
                return True
            time.sleep(0.05)
    return False

@asset(name="registered_model")
@exclusive_step(REGISTRY_POOL)
def registered_model(context) -> None:
    start = time.time()
    try:
        os.close(os.open(gate / "first", os.O_CREAT | os.O_EXCL))
        first = True
    except FileExistsError:
        first = False
    waited = other_waits_for_the_lock() if first else None
    with spans.open("a") as out:
        out.write(json.dumps({"start": start, "end": time.time(), "first": first, "saw_other_waiting": waited}) + "\n")

with DagsterInstance.get() as instance:
    print("RUN=" + json.dumps({"success": materialize([registered_model], instance=instance).success}))
"""


def test_two_registrations_as_that_role_are_serialized_by_the_advisory_lock(runner_db, tmp_path):
    """No trigger (this role cannot install it) and no pool: only the registration step's own lock
    stands between two registrations started together."""
    import json
    import subprocess
    import sys

    db, home, env = runner_db
    (tmp_path / "gate").mkdir()
    spans = tmp_path / "spans.jsonl"
    launches = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER, str(spans), str(tmp_path / "gate")],
            env={**os.environ, **env, "DAGSTER_HOME": str(home)},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for launch in launches:
        out, err = launch.communicate(timeout=240)
        assert launch.returncode == 0 and '"success": true' in out, err[-3000:]
    first, second = sorted((json.loads(line) for line in spans.read_text().splitlines()), key=lambda s: s["start"])
    assert first["first"] and first["saw_other_waiting"], "the second registration waited on the advisory lock"
    assert first["end"] <= second["start"], f"the registrations overlapped: {first} {second}"
    with _connect(db) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'mltrain_keep_slot_claim'")
        assert cur.fetchone() == (0,), "no trigger: the lock alone kept them apart"
    conn.close()
