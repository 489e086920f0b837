"""One holder at a time across processes and hosts, with no DDL: the registration step's own lock.

The ``registry`` pool (one slot) keeps registrations and promotions one at a time, and the slot claim
guard (``instance/slot_claims.py``) keeps that pool's slot exclusive. The guard is a trigger, which only
a role allowed to create triggers on Dagster's table can install; without it Dagster's two-statement
claim can let two steps into the one slot. So the registration step also holds a lock of its own for
its whole body, which needs no rights beyond a connection:

- PostgreSQL: a session advisory lock (``pg_advisory_lock``) on a connection to the instance's
  database, released when the step ends (or its connection drops, when the process dies);
- SQLite: an exclusive ``flock`` on a file next to the instance's event log database (one host);
- an instance without a database (in memory): a lock within the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

# How long a step waits for another holder (a registration takes seconds; a hung one fails the waiter).
WAIT_SECONDS = 900.0
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE when lock_timeout expires

F = TypeVar("F", bound=Callable[..., Any])
_process_locks: dict[str, threading.Lock] = {}


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (PostgreSQL advisory locks are keyed by a bigint)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


@contextlib.contextmanager
def postgres_lock(conn: Connection, name: str, wait_seconds: float = WAIT_SECONDS) -> Iterator[None]:
    """Hold the session advisory lock ``name`` on ``conn`` (an autocommit connection) for the block."""
    key = advisory_key(name)
    conn.execute(
        text("SELECT set_config('lock_timeout', :wait, false)"), {"wait": f"{max(1, int(wait_seconds * 1000))}ms"}
    )
    try:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
    except DBAPIError as exc:
        if getattr(exc.orig, "pgcode", None) != LOCK_NOT_AVAILABLE:
            raise
        raise TimeoutError(
            f"lock {name!r}: still held after {wait_seconds:g}s by {_postgres_holder(conn, key)}"
        ) from None
    try:
        yield
    finally:
        # A broken connection has released the lock already (it ends with the session).
        with contextlib.suppress(DBAPIError):
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


def _postgres_holder(conn: Connection, key: int) -> str:
    # An advisory bigint key is stored as classid (high 32 bits) and objid (low 32 bits), objsubid 1.
    row = conn.execute(
        text(
            "SELECT l.pid, a.application_name, a.client_addr FROM pg_locks l"
            " LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
            " AND l.objsubid = 1 AND l.classid::bigint = :high AND l.objid::bigint = :low"
        ),
        {"high": (key >> 32) & 0xFFFFFFFF, "low": key & 0xFFFFFFFF},
    ).first()
    if row is None:
        return "another session (gone now)"
    return f"PostgreSQL backend pid {row[0]} ({row[1] or 'no application name'}, {row[2] or 'local socket'})"


@contextlib.contextmanager
def file_lock(path: Path, wait_seconds: float = WAIT_SECONDS) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block."""
    deadline = time.monotonic() + wait_seconds
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"lock {path}: still held after {wait_seconds:g}s by another process") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def process_lock(name: str, wait_seconds: float = WAIT_SECONDS) -> Iterator[None]:
    lock = _process_locks.setdefault(name, threading.Lock())
    if not lock.acquire(timeout=wait_seconds):
        raise TimeoutError(f"lock {name!r}: still held after {wait_seconds:g}s in this process")
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def one_at_a_time(instance: Any, name: str, wait_seconds: float = WAIT_SECONDS) -> Iterator[str]:
    """Hold lock ``name`` in the Dagster ``instance``'s event log database; yields how it is held."""
    storage = instance.event_log_storage
    if not hasattr(storage, "index_connection"):
        with process_lock(name, wait_seconds):
            yield "process lock"
        return
    with storage.index_connection() as conn:
        dialect, url = conn.dialect.name, conn.engine.url
    # SQLite in memory (``DagsterInstance.ephemeral()``) is ``file:<name>?mode=memory&uri=true``.
    database = None if url.query.get("mode") == "memory" or url.database == ":memory:" else url.database
    if dialect == "postgresql":
        # Dagster's PostgreSQL connections are autocommit and not pooled: this one is the step's own.
        with storage.index_connection() as conn, postgres_lock(conn, name, wait_seconds):
            yield f"PostgreSQL advisory lock {advisory_key(name)}"
    elif dialect == "sqlite" and database:
        # Not on a SQLite connection: Dagster's SQLite storage holds a process-wide lock while one is open.
        path = Path(database.removeprefix("file:")).with_name(f"{name}.lock")
        with file_lock(path, wait_seconds):
            yield f"file lock {path}"
    else:
        with process_lock(name, wait_seconds):
            yield "process lock"


def exclusive_step(name: str) -> Callable[[F], F]:
    """Run a step function (its first argument the Dagster context) holding lock ``name`` (``one_at_a_time``)."""

    def decorate(step: F) -> F:
        @functools.wraps(step)
        def held(context: Any, *args: Any, **kwargs: Any) -> Any:
            with one_at_a_time(context.instance, f"mltrain.{name}") as how:
                context.log.debug(f"holding {how} for {name}")
                return step(context, *args, **kwargs)

        return held  # type: ignore[return-value]

    return decorate
