"""The pool slot claim guard (``instance/slot_claims.py``) on the local profile's SQLite storage.

The PostgreSQL variant (and a role that may not install it) is in ``services/test_postgres_profile.py``.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from mltrain_assets.instance.slot_claims import GUARD, guard_slot_claims, trigger_missing
from mltrain_assets_tests.instance.claim_race import claim_interleaved_in_processes
from mltrain_assets_tests.instance.test_pools import _fresh_instance


def _slot(storage, pool: str) -> tuple:
    with storage.index_connection() as conn:
        return tuple(
            conn.execute(
                text("SELECT run_id, step_key, deleted FROM concurrency_slots WHERE concurrency_key = :pool"),
                {"pool": pool},
            ).one()
        )


def _update(storage, sql: str) -> int:
    with storage.index_transaction() as conn:
        return conn.execute(text(sql)).rowcount


@pytest.mark.parametrize("guarded", [True, False], ids=["guarded", "unguarded"])
def test_a_claim_over_another_steps_claim_updates_no_row(tmp_path, guarded):
    with _fresh_instance(tmp_path) as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots("registry", 1)
        if guarded:
            assert guard_slot_claims(instance).line().splitlines()[0] == (
                f"pool slot claims: exclusive (trigger {GUARD} on concurrency_slots, sqlite)"
            )
        assert storage.claim_concurrency_slot("registry", "run-a", "register").is_claimed

        # Dagster's second statement, as a racing claimer that read the slot free would send it.
        overwritten = _update(storage, "UPDATE concurrency_slots SET run_id = 'run-b', step_key = 'register'")
        assert overwritten == (0 if guarded else 1)
        assert _slot(storage, "registry")[:2] == (("run-a" if guarded else "run-b"), "register")
        # Marking a held slot deleted (a lowered limit) and freeing it still pass.
        assert _update(storage, "UPDATE concurrency_slots SET deleted = 1") == 1
        assert _update(storage, "UPDATE concurrency_slots SET run_id = NULL, step_key = NULL, deleted = 0") == 1
        assert _slot(storage, "registry") == (None, None, 0)
        assert _update(storage, "UPDATE concurrency_slots SET run_id = 'run-b', step_key = 'register'") == 1


@pytest.mark.parametrize("guarded", [True, False], ids=["guarded", "unguarded"])
def test_claimers_in_separate_processes_that_read_the_same_free_slot(tmp_path, guarded):
    """Three run workers' claims interleaved (each SELECTs the one free slot before any UPDATEs): without
    the guard all three steps are let into a one-slot pool; with it exactly one."""
    with _fresh_instance(tmp_path) as instance:
        instance.event_log_storage.set_concurrency_slots("registry", 1)
        if guarded:
            assert guard_slot_claims(instance).installed
        statuses = claim_interleaved_in_processes(
            tmp_path / "dagster_home", "registry", claimers=3, gate=tmp_path / "gate"
        )
        holder = _slot(instance.event_log_storage, "registry")[0]
    if guarded:
        assert sorted(statuses) == ["BLOCKED", "BLOCKED", "CLAIMED"], statuses
        assert holder == f"run-{statuses.index('CLAIMED')}", "the slot names the one step let in"
    else:
        assert statuses == ["CLAIMED"] * 3, "Dagster's own claim lets every claimer into the one slot"


def test_installing_again_replaces_the_guard_and_start_checks_it_and_the_schema(tmp_path):
    with _fresh_instance(tmp_path) as instance:
        instance.event_log_storage.set_concurrency_slots("registry", 1)
        first, again = guard_slot_claims(instance), guard_slot_claims(instance)
        assert first.installed and again.installed and not again.problem
        assert again.line().splitlines()[1].startswith("Dagster schema: revision ")
        assert again.line().endswith(", the head of dagster 1.13.27")
        with instance.event_log_storage.index_connection() as conn:
            triggers = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars().all()
        assert triggers == [GUARD]


def test_a_database_behind_dagsters_schema_is_named_at_start(tmp_path):
    with _fresh_instance(tmp_path) as instance:
        _, head = instance.event_log_storage.alembic_version()
        _update(instance.event_log_storage, "UPDATE alembic_version SET version_num = 'c9159e740d7e'")
        schema = guard_slot_claims(instance).line().splitlines()[1]
    assert schema == (
        f"Dagster schema: WRONG: the instance database is at revision c9159e740d7e, dagster 1.13.27 expects "
        f"{head}: run `dagster instance migrate` with dagster 1.13.27 before any run"
    )


def test_the_start_check_names_a_missing_trigger(tmp_path):
    with _fresh_instance(tmp_path) as instance:
        assert guard_slot_claims(instance).installed
        _update(instance.event_log_storage, f"DROP TRIGGER {GUARD}")
        with instance.event_log_storage.index_connection() as conn:
            assert trigger_missing(conn) == f"trigger {GUARD} is not on concurrency_slots"
