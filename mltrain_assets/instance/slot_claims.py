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
replaces it in place (``CREATE OR REPLACE``), waiting at most ``lock_timeout`` for the table lock so
that claims are never held up behind it.

Installing it must never take the deployment down: a role that may not create the trigger, a lock not
obtained in time, or a read-only database leaves it as it was, and ``init`` names what is missing and
still succeeds. The registration step holds a lock of its own (``instance/exclusive.py``, a PostgreSQL
advisory lock, no DDL), so registrations stay one at a time without the trigger. Each start also checks
that the trigger is present and enabled, and that the instance's schema is the one this Dagster expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster
from dagster import DagsterInstance
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from mltrain_assets.instance.exclusive import advisory_key

GUARD = "mltrain_keep_slot_claim"
SLOTS_TABLE = "concurrency_slots"  # Dagster's table of pool slots (one row per slot)
# How long the install waits for its lock on the table; every claim waits behind a queued table lock.
LOCK_TIMEOUT_SECONDS = 5.0
INSUFFICIENT_PRIVILEGE, LOCK_NOT_AVAILABLE = "42501", "55P03"  # PostgreSQL SQLSTATEs
FALLBACK = "registrations are kept one at a time by their own lock instead (instance/exclusive.py)"

# Under READ COMMITTED the second of two racing UPDATEs waits for the first's row lock and then sees
# the committed claim as OLD: the trigger compares against the winner's row, not a stale snapshot.
_POSTGRES_FUNCTION = f"""
    CREATE OR REPLACE FUNCTION {GUARD}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF OLD.step_key IS NOT NULL AND NEW.step_key IS NOT NULL
         AND (NEW.run_id, NEW.step_key) IS DISTINCT FROM (OLD.run_id, OLD.step_key) THEN
        RETURN NULL;  -- another step holds this slot, so keep its claim and touch no row
      END IF;
      RETURN NEW;
    END $$
    """
_POSTGRES_TRIGGER = f"TRIGGER {GUARD} BEFORE UPDATE ON {SLOTS_TABLE} FOR EACH ROW EXECUTE FUNCTION {GUARD}()"
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
# What a role lacks to (re)create the trigger: TRIGGER on the table, CREATE on the schema (PostgreSQL 15
# grants it to no one but the database owner) and, once the function exists, its ownership.
_POSTGRES_RIGHTS = """
    SELECT current_user, pg_get_userbyid(c.relowner), has_table_privilege(c.oid, 'TRIGGER'),
           pg_get_userbyid(p.proowner), pg_has_role(p.proowner, 'USAGE'),
           has_schema_privilege(c.relnamespace, 'CREATE'), c.relnamespace::regnamespace::text
    FROM pg_class c LEFT JOIN pg_proc p ON p.proname = :guard AND p.pronamespace = c.relnamespace
    WHERE c.oid = to_regclass(:table)
    """


@dataclass(frozen=True)
class ClaimGuard:
    database: str  # "postgresql", "sqlite", or what the instance stores its events in
    installed: bool  # the trigger is in place and enabled now (installed by this start or an earlier one)
    problem: str = ""  # why this start did not (re)install it; empty when it did
    schema: str = ""  # Dagster's schema check (``schema_check``); empty for a storage without one

    def line(self) -> str:
        if self.installed:
            line = f"pool slot claims: exclusive (trigger {GUARD} on {SLOTS_TABLE}, {self.database})"
            line += f"; not replaced by this start: {self.problem}" if self.problem else ""
        else:
            line = f"pool slot claims: NOT guarded: {self.problem}; {FALLBACK}"
        return "\n".join([line, self.schema] if self.schema else [line])


def guard_slot_claims(instance: DagsterInstance, lock_timeout: float = LOCK_TIMEOUT_SECONDS) -> ClaimGuard:
    """Install (or replace) the trigger in the instance's event log database; says what it did and
    what is in place. A database error is reported in the result, never raised."""
    storage: Any = instance.event_log_storage  # a SQL storage has index_connection, the base class does not
    if not storage.supports_global_concurrency_limits or not hasattr(storage, "index_transaction"):
        name = type(storage).__name__
        return ClaimGuard(name, installed=False, problem=f"{name} storage has no {SLOTS_TABLE} table mltrain knows")
    schema = schema_check(instance)
    with storage.index_connection() as conn:
        database = conn.dialect.name
    if database not in ("postgresql", "sqlite"):
        return ClaimGuard(database, installed=False, problem=f"no guard for {database} storage", schema=schema)
    problem = ""
    try:
        with storage.index_transaction() as conn:
            if database == "postgresql":
                _install_postgres(conn, lock_timeout)
            else:
                for statement in _SQLITE:
                    conn.execute(text(statement))
    except DBAPIError as refused:
        problem = _why_refused(storage, refused, lock_timeout)
    with storage.index_connection() as conn:
        missing = trigger_missing(conn)  # whoever installed it (an earlier start by the table's owner)
    problem = "; ".join(part for part in (missing, problem) if part)
    return ClaimGuard(database, installed=not missing, problem=problem, schema=schema)


def _install_postgres(conn: Connection, lock_timeout: float) -> None:
    # SET LOCAL ends with this transaction; the trigger statement's table lock (SHARE ROW EXCLUSIVE)
    # queues every claim behind it, so a busy table makes the install give up rather than wait.
    conn.execute(text(f"SET LOCAL lock_timeout = '{max(1, round(lock_timeout * 1000))}ms'"))
    # Two `mltrain init` at once (replicas of the code location): one replaces the trigger at a time.
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key(GUARD)})
    conn.execute(text(_POSTGRES_FUNCTION))
    if conn.execute(text("SELECT current_setting('server_version_num')::int")).scalar_one() >= 140000:
        conn.execute(text(f"CREATE OR REPLACE {_POSTGRES_TRIGGER}"))
    else:  # PostgreSQL 11-13: no CREATE OR REPLACE TRIGGER; both in one transaction, never unguarded
        conn.execute(text(f"DROP TRIGGER IF EXISTS {GUARD} ON {SLOTS_TABLE}"))
        conn.execute(text(f"CREATE {_POSTGRES_TRIGGER}"))


def trigger_missing(conn: Connection) -> str:
    """What is wrong with the trigger in the database ``conn`` is connected to; empty when it is in place."""
    if conn.dialect.name == "postgresql":
        enabled = conn.execute(
            text("SELECT tgenabled FROM pg_trigger WHERE tgrelid = to_regclass(:table) AND tgname = :guard"),
            {"table": SLOTS_TABLE, "guard": GUARD},
        ).scalar_one_or_none()
        if enabled == "D":
            return f"trigger {GUARD} on {SLOTS_TABLE} is disabled (ALTER TABLE {SLOTS_TABLE} ENABLE TRIGGER {GUARD})"
    else:
        enabled = conn.execute(
            text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name = :guard AND tbl_name = :table"),
            {"table": SLOTS_TABLE, "guard": GUARD},
        ).scalar_one_or_none()
    return "" if enabled is not None else f"trigger {GUARD} is not on {SLOTS_TABLE}"


def _why_refused(storage: Any, refused: DBAPIError, lock_timeout: float) -> str:
    code = getattr(refused.orig, "pgcode", None)
    said = str(refused.orig).strip().splitlines()[0] if str(refused.orig).strip() else type(refused.orig).__name__
    if code == LOCK_NOT_AVAILABLE:
        return (
            f"no lock on {SLOTS_TABLE} within {lock_timeout:g}s (a long transaction holds it; claims were not held "
            f"up): run `mltrain init --pools` again ({said})"
        )
    if code != INSUFFICIENT_PRIVILEGE:
        return f"installing trigger {GUARD} failed: {said}"
    with storage.index_connection() as conn:
        row = conn.execute(text(_POSTGRES_RIGHTS), {"guard": GUARD, "table": SLOTS_TABLE}).one()
    user, owner, may_trigger, function_owner, owns_function, may_create, schema = row
    needs = [] if may_trigger else [f"TRIGGER on {SLOTS_TABLE}"]
    needs += [] if may_create else [f"CREATE on schema {schema}"]
    needs += [] if function_owner is None or owns_function else [f"ownership of function {GUARD}() ({function_owner})"]
    return (
        f"role {user} cannot create a trigger on {SLOTS_TABLE} (needs ownership of the table, owned by {owner}, or "
        f"{', '.join(needs) or 'a right the database named'}: {said}): run `mltrain init --pools` once as {owner}"
    )


def schema_check(instance: DagsterInstance) -> str:
    """Dagster's schema revision in the instance's database against this Dagster's (``alembic_version``)."""
    try:
        found, expected = instance.event_log_storage.alembic_version() or (None, None)
    except Exception as unreadable:  # a check at start names what is wrong; it never stops the start
        return f"Dagster schema: not readable ({type(unreadable).__name__}: {unreadable})"
    if expected is None:
        return ""
    heads = (expected,) if isinstance(expected, str) else tuple(expected)
    if found in heads:
        return f"Dagster schema: revision {found}, the head of dagster {dagster.__version__}"
    return (
        f"Dagster schema: WRONG: the instance database is at revision {found or 'none'}, dagster "
        f"{dagster.__version__} expects {' or '.join(heads)}: run `dagster instance migrate` with dagster "
        f"{dagster.__version__} before any run"
    )
