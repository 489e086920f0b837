"""The pool slot claim guard (``core/slot_claims.py``) on the local profile's SQLite storage.

The PostgreSQL variant, where Dagster's unguarded claim lets two steps into one slot, is in
``services/test_postgres_profile.py``.
"""

from __future__ import annotations

from sqlalchemy import text

from mltrain_assets.core.slot_claims import GUARD, guard_slot_claims
from mltrain_assets_tests.core.pooled_runs import claim_at_once
from mltrain_assets_tests.core.test_pools import _fresh_instance


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


def test_a_claim_over_another_steps_claim_updates_no_row(tmp_path):
    with _fresh_instance(tmp_path) as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots("registry", 1)
        assert guard_slot_claims(instance).line() == (
            f"pool slot claims: exclusive (trigger {GUARD} on concurrency_slots, sqlite)"
        )
        assert storage.claim_concurrency_slot("registry", "run-a", "register").is_claimed

        # Dagster's second statement, as a racing claimer that read the slot free would send it.
        assert _update(storage, "UPDATE concurrency_slots SET run_id = 'run-b', step_key = 'register'") == 0
        assert _slot(storage, "registry")[:2] == ("run-a", "register"), "the first claim is kept"
        # Marking a held slot deleted (a lowered limit) and freeing it still pass.
        assert _update(storage, "UPDATE concurrency_slots SET deleted = 1") == 1
        assert _update(storage, "UPDATE concurrency_slots SET run_id = NULL, step_key = NULL, deleted = 0") == 1
        assert _slot(storage, "registry") == (None, None, 0)
        assert _update(storage, "UPDATE concurrency_slots SET run_id = 'run-b', step_key = 'register'") == 1


def test_installing_again_replaces_the_guard_and_a_burst_takes_the_slot_one_at_a_time(tmp_path):
    with _fresh_instance(tmp_path) as instance:
        instance.event_log_storage.set_concurrency_slots("registry", 1)
        assert guard_slot_claims(instance).installed and guard_slot_claims(instance).installed
        with instance.event_log_storage.index_connection() as conn:
            triggers = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars().all()
        assert triggers == [GUARD]

        rounds = claim_at_once(instance.event_log_storage, "registry", claimers=4, rounds=5)
        assert [r["most"] for r in rounds] == [1] * 5, rounds
        assert [r["served"] for r in rounds] == [4] * 5, "every claimer got the slot in turn"
        assert all(len(r["holders"]) == 1 for r in rounds)
