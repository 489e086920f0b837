"""Private Dagster APIs stay in ``instance/dagster_private.py``, each name documented; the rest is public."""

from __future__ import annotations

import ast
import re
import types
from pathlib import Path

import yaml
from dagster import DagsterInstance, instance_for_test

import mltrain_assets
from mltrain_assets.instance import dagster_private
from mltrain_assets.instance.heal import is_local_storage

PACKAGE = Path(mltrain_assets.__file__).resolve().parent
PRIVATE_MODULE = PACKAGE / "instance" / "dagster_private.py"
# ``dagster._core...``, ``from dagster._utils import``, ``"dagster._..."`` in a string: never ``dagster.__version__``.
PRIVATE = re.compile(r"\bdagster\._(?!_)")


def test_no_module_but_dagster_private_uses_a_private_dagster_api():
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != PRIVATE_MODULE
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line) or "._storage" in line
    ]
    assert not offenders, "private Dagster APIs outside instance/dagster_private.py:\n" + "\n".join(offenders)


def _private_imports() -> dict[str, str]:
    """``{name: module}`` for every name ``dagster_private`` imports from ``dagster._``."""
    tree = ast.parse(PRIVATE_MODULE.read_text())
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dagster._"):
            names.update({alias.asname or alias.name: node.module for alias in node.names})
        elif isinstance(node, ast.Import):
            assert not any(alias.name.startswith("dagster._") for alias in node.names), "import names, not modules"
    return names


def test_every_private_name_is_documented_with_its_module_and_exported():
    imported = _private_imports()
    assert imported, "dagster_private imports nothing: delete it"
    doc = dagster_private.__doc__ or ""
    undocumented = [name for name in imported if f"``{name}``" not in doc]
    assert not undocumented, f"say in dagster_private's docstring why these are needed: {undocumented}"
    unnamed_modules = sorted({module for module in imported.values() if f"``{module}``" not in doc})
    assert not unnamed_modules, f"name the private modules in dagster_private's docstring: {unnamed_modules}"
    assert sorted(dagster_private.__all__) == sorted(imported)


def test_the_names_mltrain_imports_from_dagster_private_are_the_ones_it_provides():
    used = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "mltrain_assets.instance.dagster_private":
                used.update(alias.name for alias in node.names)
    assert used == set(dagster_private.__all__), "drop what nothing uses from dagster_private (or use it)"


def test_a_sqlite_run_storage_is_local_and_others_are_not():
    with instance_for_test() as instance:  # the default storage: SQLite under the instance's folder
        assert is_local_storage(instance)
    assert not is_local_storage(DagsterInstance.ephemeral())  # in memory: nothing on disk to share

    class PostgresRunStorage:  # what `storage: postgres` gives (dagster_postgres), reduced to its name
        inst_data = None

    assert not is_local_storage(types.SimpleNamespace(run_storage=PostgresRunStorage()))


def test_a_run_storage_wrapping_sqlite_storage_is_local():
    """Dagster's ``LegacyRunStorage`` wraps a whole storage: its configuration names the wrapped class."""
    from dagster._core.storage.legacy_storage import LegacyRunStorage  # a test may build one
    from dagster._serdes import ConfigurableClassData

    def wrapping(storage_data) -> LegacyRunStorage:
        config = {
            "module_name": storage_data.module_name,
            "class_name": storage_data.class_name,
            "config_yaml": storage_data.config_yaml,
        }
        data = ConfigurableClassData("dagster._core.storage.legacy_storage", "LegacyRunStorage", yaml.dump(config))
        return data.rehydrate(as_type=LegacyRunStorage)

    with instance_for_test() as instance:
        legacy = wrapping(instance.get_ref().storage_data)
        assert type(legacy).__name__ == "LegacyRunStorage"
        assert is_local_storage(types.SimpleNamespace(run_storage=legacy))
    # The same wrapper around PostgreSQL storage (its class name alone says nothing) is not local.
    config = yaml.dump({"module_name": "dagster_postgres", "class_name": "DagsterPostgresStorage", "config_yaml": ""})
    wrapper = types.SimpleNamespace(
        inst_data=ConfigurableClassData("dagster._core.storage.legacy_storage", "LegacyRunStorage", config)
    )
    assert not is_local_storage(types.SimpleNamespace(run_storage=wrapper))
