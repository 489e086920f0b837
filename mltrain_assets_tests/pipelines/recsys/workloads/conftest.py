"""Fixtures of the recommendations workload tests: the simulated world and one trained model (built on first use)."""

from __future__ import annotations

from typing import Any

import pytest

from mltrain_assets_tests.pipelines.recsys.workloads._world import RecsysWorld, build_world, train_uninterrupted


@pytest.fixture(scope="session")
def recsys_world(tmp_path_factory: pytest.TempPathFactory) -> RecsysWorld:
    """Eight committed days and their embeddings (Spark): only slow tests ask for it."""
    return build_world(tmp_path_factory.mktemp("recsys_world"))


@pytest.fixture(scope="session")
def trained_model(recsys_world: RecsysWorld) -> dict[str, Any]:
    """The manifest of one uninterrupted training run (torchrun, 2 workers) on the world."""
    return train_uninterrupted(recsys_world)
