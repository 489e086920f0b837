"""Pool limits are configuration written by one explicit step (``mltrain init``), never by a run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dagster import DagsterInstance, asset, materialize

from mltrain_assets.instance.pools import (
    DEFAULT_POOL_LIMITS,
    apply_pool_limits,
    configured_pool_limits,
    declared_pools,
)
from mltrain_assets.resources.tracking import REGISTRY_POOL, ModelRegistry
from mltrain_assets_tests.instance.pooled_runs import most_at_once, run_mltrain_init, start_runs_at_once

REPO = Path(__file__).resolve().parents[2]


def _fresh_instance(tmp_path: Path) -> DagsterInstance:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return DagsterInstance.from_config(str(home))


def _limits(instance: DagsterInstance) -> dict[str, tuple[int, bool]]:
    return {p.name: (p.limit, p.from_default) for p in instance.event_log_storage.get_pool_limits()}


def test_the_project_declares_its_pools():
    from mltrain_assets.definitions import defs

    assert declared_pools(defs) == {"spark", "training", "registry"}
    assert DEFAULT_POOL_LIMITS == {REGISTRY_POOL: 1}


def test_a_run_writes_no_pool_limit(tmp_path: Path):
    """The registry resource starting in a run leaves the instance's limits alone (it once set registry=1 here)."""
    with _fresh_instance(tmp_path) as instance:

        @asset(pool=REGISTRY_POOL)
        def registered(registry: ModelRegistry) -> None:
            pass

        result = materialize(
            [registered], instance=instance, resources={"registry": ModelRegistry(tracking_uri="sqlite:///x.db")}
        )
        assert result.success
        # Dagster itself gives an unknown pool the profile's default when a step first claims it.
        assert _limits(instance).get(REGISTRY_POOL) in (None, (2, True))


def test_init_writes_configured_limits_and_initializes_the_rest_to_the_default(tmp_path: Path):
    with _fresh_instance(tmp_path) as instance:
        changes = apply_pool_limits(instance, {"spark", "training", "registry"})
        assert _limits(instance) == {"registry": (1, False), "spark": (2, True), "training": (2, True)}
        assert {c.pool: c.action for c in changes} == {
            "registry": "set",
            "spark": "initialized",
            "training": "initialized",
        }
        assert "pool registry: 1 slot(s) from MLTRAIN_POOL_LIMITS (set)" in [c.line() for c in changes]

        again = apply_pool_limits(instance, {"spark", "training", "registry"})
        assert {c.action for c in again} == {"kept"}, "a second init changes nothing"

        # An operator's own limit on a pool the settings do not name is kept...
        instance.event_log_storage.set_concurrency_slots("training", 1)
        kept = {c.pool: c for c in apply_pool_limits(instance, {"spark", "training", "registry"})}
        assert kept["training"].limit == 1 and kept["training"].action == "kept"
        # ...and the settings win for the pools they name.
        apply_pool_limits(instance, {"registry"}, {"registry": 3})
        assert _limits(instance)["registry"] == (3, False)


def test_pool_limits_setting_is_checked(monkeypatch):
    monkeypatch.setenv("MLTRAIN_POOL_LIMITS", '{"training": 1}')
    assert configured_pool_limits() == {"registry": 1, "training": 1}
    monkeypatch.setenv("MLTRAIN_POOL_LIMITS", '{"training": "one"}')
    with pytest.raises(ValueError, match=r"MLTRAIN_POOL_LIMITS=.*expected a JSON object of pool: slots"):
        configured_pool_limits()

    from mltrain_assets.settings import settings_problems

    assert any(p.startswith("MLTRAIN_POOL_LIMITS=") for p in settings_problems({"MLTRAIN_POOL_LIMITS": "[1]"}))


def test_six_runs_started_at_once_on_a_brand_new_instance_all_succeed(tmp_path: Path):
    """The demo's failure: 8 city runs starting together on a fresh home, one failing with
    ``UNIQUE constraint failed: concurrency_limits.concurrency_key`` (resource ``registry``)."""
    dagster_home = tmp_path / "dagster_home"
    printed = run_mltrain_init(dagster_home, tmp_path / "mltrain_home")
    assert "pool registry: 1 slot(s) from MLTRAIN_POOL_LIMITS (set)" in printed
    assert "pool training: 2 slot(s) from default_limit (initialized)" in printed

    outcome = start_runs_at_once(6, dagster_home, tmp_path / "runs")
    for run in outcome["runs"]:
        assert run["returncode"] == 0 and run["run"]["success"], run["stderr"]
    assert len(outcome["spans"]) == 18, "every run executed its three pooled steps"
    assert "pool slot claims: exclusive (trigger mltrain_keep_slot_claim on concurrency_slots, sqlite)" in printed
    assert most_at_once(outcome["spans"], "registry") == 1, "registry has one slot (the claim guard keeps it)"
    assert most_at_once(outcome["spans"], "training") <= 2 and most_at_once(outcome["spans"], "spark") <= 2
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        assert _limits(instance) == {"registry": (1, False), "spark": (2, True), "training": (2, True)}
        assert not instance.event_log_storage.get_concurrency_run_ids(), "every slot was given back"
