"""Op-concurrency pool limits: configuration applied once, before any run, never by a run.

Dagster 1.13's instance profile takes one limit for every pool (``concurrency.pools.default_limit``);
a pool's own limit (``registry``: one slot, so registrations and promotions never overlap) lives
in the instance's storage. Writing it when a run starts races: two runs starting together on a
fresh instance both insert the pool's row and one fails (``UNIQUE constraint failed:
concurrency_limits.concurrency_key``). So limits come from the ``MLTRAIN_POOL_LIMITS`` setting and
are written by one explicit step, :func:`apply_pool_limits` (``mltrain init``; ``mltrain demo``,
``materialize`` and ``dev`` run it before they launch anything; on Kubernetes the code location's
init container runs ``mltrain init --pools``). The same step initializes every other pool the
definitions declare to the profile's default, so Dagster's own first-claim initialization (which
runs in each run worker) never has a row to race for either. Re-running it is harmless and two
concurrent runs of it converge.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial

from dagster import DagsterInstance
from tenacity import RetryError, Retrying, stop_after_attempt, wait_incrementing

POOL_LIMITS_ENV = "MLTRAIN_POOL_LIMITS"
# Pools with a limit of their own; every other declared pool takes the profile's default_limit.
DEFAULT_POOL_LIMITS = {"registry": 1}
# Two `mltrain init` at once may both insert a pool's row: the loser re-reads and tries again.
_ATTEMPTS = 5


@dataclass(frozen=True)
class PoolChange:
    pool: str
    limit: int | None
    source: str  # "MLTRAIN_POOL_LIMITS" or "default_limit"
    action: str  # "set", "kept", "initialized"

    def line(self) -> str:
        return f"pool {self.pool}: {self.limit} slot(s) from {self.source} ({self.action})"


def configured_pool_limits(env: Mapping[str, str] | None = None) -> dict[str, int]:
    """``MLTRAIN_POOL_LIMITS`` (a JSON object of pool -> slots) over the embedded defaults."""
    env = os.environ if env is None else env
    raw = env.get(POOL_LIMITS_ENV) or "{}"
    try:
        limits = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{POOL_LIMITS_ENV}={raw!r} is not JSON: {exc}") from None
    if not isinstance(limits, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in limits.items()
    ):
        raise ValueError(
            f'{POOL_LIMITS_ENV}={raw!r}: expected a JSON object of pool: slots >= 0, e.g. {{"registry": 1}}'
        )
    return {**DEFAULT_POOL_LIMITS, **limits}


def declared_pools(defs) -> set[str]:
    """Every pool an asset of these definitions executes in."""
    return {
        pool
        for assets_def in defs.assets or []
        if hasattr(assets_def, "node_def")
        for pool in assets_def.node_def.pools
    }


def apply_pool_limits(
    instance: DagsterInstance, pools: Iterable[str], limits: Mapping[str, int] | None = None
) -> list[PoolChange]:
    """Give each pool its configured limit, or the profile's default; returns what each pool has now."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    limits = configured_pool_limits() if limits is None else dict(limits)
    default = instance.global_op_concurrency_default_limit
    changes = []
    for pool in sorted(set(pools) | set(limits)):
        if pool in limits:
            changes.append(
                _converge(storage, pool, limits[pool], partial(storage.set_concurrency_slots, pool, limits[pool]))
            )
        elif (explicit := _explicit_limit(storage, pool)) is not None:
            # `dagster instance concurrency set POOL N`: an operator's choice on this instance, kept.
            changes.append(PoolChange(pool, explicit, "the instance (dagster instance concurrency set)", "kept"))
        elif default is not None:
            changes.append(
                _converge(storage, pool, None, partial(storage.initialize_concurrency_limit_to_default, pool), default)
            )
    return changes


def _explicit_limit(storage, pool: str) -> int | None:
    current = next((p for p in storage.get_pool_limits() if p.name == pool), None)
    return current.limit if current is not None and not current.from_default else None


def _converge(
    storage, pool: str, want: int | None, write: Callable[[], object], default: int | None = None
) -> PoolChange:
    """Write until the pool reads as wanted (another writer racing us is an attempt, not an error)."""
    source = POOL_LIMITS_ENV if want is not None else "default_limit"
    target = want if want is not None else default
    attempts = 0

    def attempt() -> PoolChange:
        nonlocal attempts
        attempts += 1
        current = next((p for p in storage.get_pool_limits() if p.name == pool), None)
        if current is not None and current.limit == target and current.from_default == (want is None):
            return PoolChange(pool, target, source, "kept" if attempts == 1 else "set")
        write()  # sqlalchemy IntegrityError / OperationalError ("database is locked") when another writer races
        return PoolChange(pool, target, source, "set" if want is not None else "initialized")

    retrying = Retrying(stop=stop_after_attempt(_ATTEMPTS), wait=wait_incrementing(start=0.1, increment=0.1))
    try:
        return retrying(attempt)
    except RetryError as exhausted:
        raise RuntimeError(f"could not set pool {pool} to {target}: {exhausted.last_attempt.exception()}") from None
