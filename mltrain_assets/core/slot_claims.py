"""A database guard that makes each pool slot claim exclusive: a pool's limit holds under a burst of runs.

Dagster 1.13.27 claims a slot in two statements, each committed on its own
(``SqlEventLogStorage._claim_concurrency_slot``): SELECT a free slot ``FOR UPDATE SKIP LOCKED``,
then UPDATE that slot by id to name the claiming step. The row lock ends with the SELECT, so two
run workers can pick the same free slot and both write themselves into it: both steps run, over the
pool's limit (the project CI saw two ``registry`` steps at once on a one-slot pool in PostgreSQL;
six claimers released together on one slot let two in on 19 and 29 rounds of 100 here, the burst of
``services/test_postgres_profile.py``).
SQLite runs the same two statements.

The guard is a BEFORE UPDATE trigger on Dagster's ``concurrency_slots`` table that drops an update
writing a claim over another step's claim. Dagster reads the 0 rows updated as BLOCKED, and its step
waits and claims again as for any full pool. Freeing a slot (claim -> NULL) and marking it deleted
(claim unchanged) pass. The trigger lives in the instance's database, so every process of the
deployment (run workers, the daemon, the webserver; images without mltrain among them) is guarded
without a custom storage class, which the Dagster Helm chart cannot configure. ``mltrain init``
(and ``--pools``, the code location's init container) installs it before any run; installing again
replaces it in place.
"""

from __future__ import annotations

from dataclasses import dataclass

from dagster import DagsterInstance
from sqlalchemy import text

GUARD = "mltrain_keep_slot_claim"
SLOTS_TABLE = "concurrency_slots"  # Dagster's table of pool slots (one row per slot)

# Under READ COMMITTED the second of two racing UPDATEs waits for the first's row lock and then sees
# the committed claim as OLD: the trigger compares against the winner's row, not a stale snapshot.
_POSTGRES = [
    f"""
    CREATE OR REPLACE FUNCTION {GUARD}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF OLD.step_key IS NOT NULL AND NEW.step_key IS NOT NULL
         AND (NEW.run_id, NEW.step_key) IS DISTINCT FROM (OLD.run_id, OLD.step_key) THEN
        RETURN NULL;  -- another step holds this slot, so keep its claim and touch no row
      END IF;
      RETURN NEW;
    END $$
    """,
    # Dropped and created in one transaction (DDL is transactional): no claim sees the table unguarded.
    f"DROP TRIGGER IF EXISTS {GUARD} ON {SLOTS_TABLE}",
    f"CREATE TRIGGER {GUARD} BEFORE UPDATE ON {SLOTS_TABLE} FOR EACH ROW EXECUTE FUNCTION {GUARD}()",
]
# SQLite serializes writers, so the claimer that writes second always sees the first claim as OLD.
_SQLITE = [
    f"DROP TRIGGER IF EXISTS {GUARD}",
    f"""
    CREATE TRIGGER {GUARD} BEFORE UPDATE OF run_id, step_key ON {SLOTS_TABLE} FOR EACH ROW
    WHEN OLD.step_key IS NOT NULL AND NEW.step_key IS NOT NULL
         AND (NEW.run_id IS NOT OLD.run_id OR NEW.step_key IS NOT OLD.step_key)
    BEGIN SELECT RAISE(IGNORE); END
    """,
]


@dataclass(frozen=True)
class ClaimGuard:
    database: str  # "postgresql", "sqlite", or what the instance stores its events in
    installed: bool

    def line(self) -> str:
        if self.installed:
            return f"pool slot claims: exclusive (trigger {GUARD} on {SLOTS_TABLE}, {self.database})"
        return f"pool slot claims: not guarded ({self.database} storage has no {SLOTS_TABLE} table mltrain knows)"


def guard_slot_claims(instance: DagsterInstance) -> ClaimGuard:
    """Install (or replace) the trigger in the instance's event log database; says what it did."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits or not hasattr(storage, "index_transaction"):
        return ClaimGuard(type(storage).__name__, installed=False)
    with storage.index_transaction() as conn:
        database = conn.dialect.name
        if database == "postgresql":
            # Two `mltrain init` at once (replicas of the code location): one replaces the trigger at a time.
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": GUARD})
            statements = _POSTGRES
        elif database == "sqlite":
            statements = _SQLITE
        else:
            return ClaimGuard(database, installed=False)
        for statement in statements:
            conn.execute(text(statement))
    return ClaimGuard(database, installed=True)
