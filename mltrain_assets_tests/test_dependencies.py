"""Dependencies declared and checked: every third-party import is named in pyproject.toml, and every runtime
dependency is imported or says where it is used.

Imports are read with ``ast`` (nothing is imported); an import's distribution comes from
``importlib.metadata.packages_distributions()`` (``yaml`` -> PyYAML, ``sklearn`` -> scikit-learn). The package
itself must need only ``[project].dependencies``; the tests and benchmarks may also use the ``dev`` extra.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FIRST_PARTY = {"mltrain_assets", "mltrain_assets_tests", "bench"}

# Runtime dependencies no module imports, each with where it is used (a file and a string in it) and why.
USED_WITHOUT_IMPORT = {
    "dagster-webserver": ("mltrain_assets/cli/devstack.py", "dagster-webserver", "the UI `mltrain dev` starts"),
    "dagster-graphql": (
        "mltrain_assets/cli/backfill.py",
        "/graphql",
        "the webserver's API (`mltrain backfill` posts to it); pinned with the Dagster family",
    ),
    "dagster-aws": (
        "helm-values/dagster.yaml",
        "S3ComputeLogManager",
        "the production instance's compute log manager, loaded from this image in the code location and run pods",
    ),
    "dagster-postgres": (
        "deploy/dagster.postgres.yaml",
        "postgres_db",
        "instance storage of the PostgreSQL profile and the Helm values",
    ),
    "psycopg2-binary": (
        "deploy/dagster.postgres.yaml",
        "postgresql+psycopg2",
        "the driver the instance's SQLAlchemy URL names",
    ),
    "s3fs": ("mltrain_assets/artifacts/storage.py", "s3://", "fsspec's s3:// implementation, found by protocol"),
}


def _declared(*extras: str) -> set[str]:
    requirements = list(PYPROJECT["project"]["dependencies"])
    for extra in extras:
        requirements += PYPROJECT["project"]["optional-dependencies"][extra]
    return {canonicalize_name(Requirement(line).name) for line in requirements}


def _top_level_imports(folder: Path) -> dict[str, set[str]]:
    """Absolute imports under ``folder``: top-level name -> the files importing it."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


@cache
def _distributions_of() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _third_party(folder: Path) -> dict[str, set[str]]:
    return {
        name: files
        for name, files in _top_level_imports(folder).items()
        if name not in sys.stdlib_module_names and name not in FIRST_PARTY
    }


def _undeclared(folder: Path, declared: set[str]) -> list[str]:
    problems = []
    for name, files in sorted(_third_party(folder).items()):
        distributions = {canonicalize_name(d) for d in _distributions_of().get(name, [])}
        where = ", ".join(sorted(files)[:3])
        if not distributions:
            problems.append(f"{name} (imported in {where}) is installed by no distribution here")
        elif not distributions & declared:
            problems.append(f"{name} (imported in {where}) comes from {sorted(distributions)}: declare one")
    return problems


def test_every_import_of_the_package_is_a_declared_runtime_dependency():
    problems = _undeclared(ROOT / "mltrain_assets", _declared())
    assert problems == [], "pyproject.toml [project].dependencies:\n" + "\n".join(problems)


@pytest.mark.parametrize("folder", ["mltrain_assets_tests", "bench"])
def test_every_import_of_the_tests_and_benchmarks_is_declared(folder):
    problems = _undeclared(ROOT / folder, _declared("dev"))
    assert problems == [], "pyproject.toml dependencies or the dev extra:\n" + "\n".join(problems)


def test_every_runtime_dependency_is_imported_or_says_where_it_is_used():
    imported = {
        canonicalize_name(distribution)
        for name in _third_party(ROOT / "mltrain_assets")
        for distribution in _distributions_of().get(name, [])
    }
    declared = _declared()
    unused = sorted(declared - imported - set(USED_WITHOUT_IMPORT))
    assert unused == [], f"declared, never imported, used nowhere said: {unused} (use them or drop them)"
    stale = sorted(set(USED_WITHOUT_IMPORT) & imported) + sorted(set(USED_WITHOUT_IMPORT) - declared)
    assert stale == [], f"USED_WITHOUT_IMPORT lists what is imported or not declared: {stale}"
    for distribution, (path, marker, why) in USED_WITHOUT_IMPORT.items():
        assert marker in (ROOT / path).read_text(), f"{distribution} ({why}): {marker!r} is no longer in {path}"


def test_the_card_integrations_that_were_never_used_are_gone():
    """dagster-pyspark and dagster-mlflow: the data plane (Spark sessions, MLflow runs) lives in workloads that
    import no dagster; the control plane registers through MlflowClient (README, Stack notes)."""
    declared = _declared("dev")
    assert not {"dagster-pyspark", "dagster-mlflow", "dagster-spark"} & declared
    for lock in ("requirements.lock", "requirements.runtime.lock"):
        text = (ROOT / lock).read_text()
        assert "dagster-pyspark==" not in text and "dagster-mlflow==" not in text, lock
