"""The registration step's own lock (``instance/exclusive.py``) on SQLite and in-memory instances.

On PostgreSQL (an advisory lock, taken by a role that may not install the slot claim guard) it is in
``services/test_postgres_profile.py``.
"""

from __future__ import annotations

import logging
import threading
import types

import pytest
from dagster import DagsterInstance

from mltrain_assets.instance.exclusive import exclusive_step, one_at_a_time
from mltrain_assets_tests.instance.test_pools import _fresh_instance


def _attempt(instance, name: str, wait_seconds: float) -> str:
    """Another holder's attempt, from another thread: what it got."""
    outcome: list[str] = []

    def attempt() -> None:
        try:
            with one_at_a_time(instance, name, wait_seconds=wait_seconds) as how:
                outcome.append(f"held: {how}")
        except TimeoutError as refused:
            outcome.append(f"refused: {refused}")

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join()
    return outcome[0]


def test_on_sqlite_a_second_holder_waits_for_a_file_lock_next_to_the_database(tmp_path):
    with _fresh_instance(tmp_path) as instance:
        lock_file = tmp_path / "dagster_home" / "history" / "runs" / "mltrain.registry.lock"  # by index.db
        with one_at_a_time(instance, "mltrain.registry") as how:
            assert how == f"file lock {lock_file}"
            refused = _attempt(instance, "mltrain.registry", wait_seconds=0.3)
            assert refused == f"refused: lock {lock_file}: still held after 0.3s by another process"
            assert _attempt(instance, "mltrain.other", wait_seconds=0.3).startswith("held: file lock ")
        assert _attempt(instance, "mltrain.registry", wait_seconds=0.3) == f"held: file lock {lock_file}"


def test_an_instance_in_memory_is_held_within_the_process():
    with DagsterInstance.ephemeral() as instance, one_at_a_time(instance, "mltrain.registry") as how:
        assert how == "process lock"
        assert _attempt(instance, "mltrain.registry", wait_seconds=0.2).startswith("refused: lock 'mltrain.registry'")


def test_a_decorated_step_holds_the_lock_for_its_body_and_gives_it_back_when_it_fails(tmp_path):
    with _fresh_instance(tmp_path) as instance:
        context = types.SimpleNamespace(instance=instance, log=logging.getLogger("step"))
        seen = []

        @exclusive_step("registry")
        def register(context, model: str) -> str:
            seen.append(_attempt(context.instance, "mltrain.registry", wait_seconds=0.2))
            if model == "broken":
                raise RuntimeError("registry unreachable")
            return model

        assert register(context, "demand") == "demand"
        with pytest.raises(RuntimeError, match="registry unreachable"):
            register(context, "broken")
        assert [s.split(":")[0] for s in seen] == ["refused", "refused"], "held while the body ran"
        assert _attempt(instance, "mltrain.registry", wait_seconds=0.2).startswith("held: "), "released after"
