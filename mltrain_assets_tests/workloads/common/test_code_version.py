"""A workload's code version comes from the source it runs: edit a training function in a copy of the package and
a new version is planned; a comment, a docstring or reformatting is not a new version; a lock pin is."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import shutil
import sys
from pathlib import Path

import pytest

from mltrain_assets.core.versions import version_of
from mltrain_assets.pipelines.demand.params import TrainParams
from mltrain_assets.workloads.common.code_version import PREFIX, derive, derived_code_version
from mltrain_assets.workloads.common.params import WorkloadParams, workload
from mltrain_assets.workloads.ingest.params import IngestParams

REPO = Path(__file__).resolve().parents[3]
LOCK = REPO / "requirements.runtime.lock"
TRAIN = "mltrain_assets.pipelines.demand.workloads.train"
INGEST = "mltrain_assets.workloads.ingest.workload"
FIT = "    return lgb.train(params, dataset, num_boost_round=rounds)\n"


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> dict[str, Path]:
    """Three copies of the package: as it is, with the training function edited, with only comments edited."""
    roots = {}
    for name in ("same", "edited", "comments"):
        root = tmp_path_factory.mktemp(name)
        shutil.copytree(REPO / "mltrain_assets", root / "mltrain_assets", ignore=shutil.ignore_patterns("__pycache__"))
        roots[name] = root
    train = Path("mltrain_assets/pipelines/demand/workloads/train.py")
    edited = roots["edited"] / train
    source = edited.read_text()
    assert source.count(FIT) == 1, "the test edits this line of _fit_booster"
    edited.write_text(source.replace(FIT, FIT.replace("num_boost_round=rounds", "num_boost_round=rounds + 1")))
    commented = roots["comments"] / train
    source = commented.read_text()
    commented.write_text(
        "# A comment the version ignores.\n"
        + source.replace(
            FIT, "    # Why this many rounds: the hyperparameter says.\n" + FIT.replace(", ", " ,  ")
        ).replace('"""Train ``city_demand_model[D, city]``', '"""A reworded docstring: Train ``city_demand_model``', 1)
    )
    return roots


def _version(module: str, root: Path, lock: Path = LOCK) -> str:
    return derive(module, (str(root),), lock).version


def test_an_unchanged_copy_derives_the_version_the_package_has(copies):
    """Where the source sits does not matter, only what it says (and the pins)."""
    assert _version(TRAIN, copies["same"]) == TrainParams.code_version == derived_code_version(TRAIN)
    assert TrainParams.code_version.startswith(PREFIX)


def test_editing_the_training_function_plans_a_new_version(copies):
    before, after = _version(TRAIN, copies["same"]), _version(TRAIN, copies["edited"])
    assert after != before
    # What core.steps plans from it: same inputs, same params, a new version (a new path; nothing stale reused).
    inputs, params = {"city_demand_features": "f-1"}, TrainParams(date="2026-03-10", city="nyc").versioned_fields()
    assert version_of(after, inputs, params) != version_of(before, inputs, params)
    # A workload whose module tree does not hold the edited module keeps its version.
    assert _version(INGEST, copies["edited"]) == _version(INGEST, copies["same"])


def test_a_comment_docstring_or_formatting_change_is_not_a_new_version(copies):
    """The chosen behaviour: the version hashes the normalised syntax tree (no comments, docstrings, layout)."""
    assert (copies["comments"] / "mltrain_assets/pipelines/demand/workloads/train.py").read_text() != (
        copies["same"] / "mltrain_assets/pipelines/demand/workloads/train.py"
    ).read_text()
    assert _version(TRAIN, copies["comments"]) == _version(TRAIN, copies["same"])


def test_the_module_tree_holds_what_the_entry_imports_and_no_more(copies):
    derivation = derive(TRAIN, (str(copies["same"]),), LOCK)
    assert {
        TRAIN,
        "mltrain_assets.pipelines.demand.params",
        "mltrain_assets.pipelines.demand.contract",
        "mltrain_assets.pipelines.demand.workloads.features",  # imported from train
        "mltrain_assets.workloads.common.runtime",
        "mltrain_assets.pipelines.demand",  # parent packages run when it is imported
    } <= set(derivation.modules)
    assert not any(name.startswith("mltrain_assets.core") for name in derivation.modules), "no control plane"
    assert "mltrain_assets.pipelines.recsys.workloads.train.launcher" not in derivation.modules
    assert dict(derivation.pins)["lightgbm"] == _lock_pin("lightgbm")


def test_deriving_imports_nothing_from_the_source_it_reads(copies):
    derive(TRAIN, (str(copies["edited"]),), LOCK)
    loaded = [
        m for m in list(sys.modules.values()) if str(getattr(m, "__file__", "") or "").startswith(str(copies["edited"]))
    ]
    assert loaded == []


def test_a_changed_pin_in_the_lock_is_a_new_version(copies, tmp_path):
    lock = tmp_path / "requirements.runtime.lock"
    text = LOCK.read_text()
    old = f"lightgbm=={_lock_pin('lightgbm')}"
    assert old in text
    lock.write_text(text.replace(old, "lightgbm==9.9.9"))
    assert _version(TRAIN, copies["same"], lock) != _version(TRAIN, copies["same"])
    assert _version(INGEST, copies["same"], lock) == _version(INGEST, copies["same"]), "ingestion imports no lightgbm"


def test_a_lock_and_the_installed_distributions_agree_for_the_same_pins(copies, tmp_path):
    """An image has no lock (the Dockerfile installs it, then deletes it): installed versions stand in, local
    suffixes dropped on both sides, so `torch==2.13.0` in the lock and an installed `2.13.0+cpu` are one pin."""
    installed = derive(TRAIN, (str(copies["same"]),), None)  # the copy has no lock beside it
    assert installed.pins_from == "installed"
    lock = tmp_path / "requirements.runtime.lock"
    lock.write_text(
        "".join(
            f"{dist}=={importlib.metadata.version(dist)}+cpu \\\n    --hash=sha256:00\n" for dist, _ in installed.pins
        )
    )
    from_lock = derive(TRAIN, (str(copies["same"]),), lock)
    assert from_lock.pins_from == lock.name and from_lock.pins == installed.pins
    assert from_lock.version == installed.version
    assert all("+" not in version for _, version in installed.pins)


@workload("mltrain_assets.pipelines.demand.workloads.train", code_version="demand-train-pinned")
@dataclasses.dataclass(frozen=True, kw_only=True)
class PinnedParams(WorkloadParams):
    """A workload whose author overrides the derived version."""


def test_an_explicit_code_version_overrides_the_derived_one_and_says_so():
    assert PinnedParams.code_version == "demand-train-pinned"
    assert PinnedParams.code_version_source() == "explicit override"
    assert PinnedParams().code_version == "demand-train-pinned", "a workload reads it from its params"
    assert TrainParams.code_version_source().startswith(f"derived ({TrainParams.code_version}: ")
    assert "pins from requirements.runtime.lock" in TrainParams.code_version_source()


def test_a_workload_writes_the_version_the_control_plane_plans():
    """Workloads write ``Params.code_version`` into their manifests: the value the asset hashes."""
    assert TrainParams(date="d", city="nyc").code_version == TrainParams.code_version == derived_code_version(TRAIN)
    assert IngestParams.code_version == derived_code_version(INGEST)


def test_a_module_it_cannot_find_is_named():
    with pytest.raises(ModuleNotFoundError, match=r"cannot find the source of mltrain_assets\.nowhere"):
        derive("mltrain_assets.nowhere", (str(REPO),), LOCK)


def _lock_pin(dist: str) -> str:
    (line,) = [line for line in LOCK.read_text().splitlines() if line.startswith(f"{dist}==")]
    return line.split("==")[1].split()[0]


def test_a_plugin_hashes_its_own_package_and_the_framework_modules_it_uses_through_the_sdk():
    """`from mltrain_assets.sdk import ArtifactWriter` resolves lazily (PEP 562): followed to the module it loads."""
    from mltrain_assets_tests.pipelines.churn_plugin.params import ChurnTrainParams

    derivation = derive(ChurnTrainParams.module)
    assert ChurnTrainParams.code_version == derivation.version
    assert {
        "mltrain_assets_tests.pipelines.churn_plugin.train",
        "mltrain_assets_tests.pipelines.churn_plugin.contract",
        "mltrain_assets.sdk",
        "mltrain_assets.artifacts.writer",
        "mltrain_assets.workloads.common.runtime",
    } <= set(derivation.modules)
    assert not any(name.startswith("mltrain_assets.core") for name in derivation.modules), "no Dagster side"
    assert "scikit-learn" in dict(derivation.pins)
