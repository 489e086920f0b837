"""The package's layers, as README's structure drawing shows them: every import points down or sideways, never up.

Read from the source (``ast``), relative imports resolved, function-level imports included: a lazy import is
still a dependency. ``mltrain_assets.sdk`` is the public facade beside the layers: it re-exports lazily from
every layer and any layer may use it (that a workload's names load no dagster is ``test_sdk.py``'s business).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mltrain_assets"

# Bottom to top. A module may import its own layer and any layer below it.
LAYERS = (
    # dagster-free: launch/, artifacts/, workloads/, each pipeline's data plane, registry, settings, landing, schemas
    "base",
    "resources",  # Dagster resources: storage, registry, compute per deployment
    "instance",  # operating the Dagster instance: heal, reap, pools, slot claims, private APIs
    "core",  # control-plane mechanics every pipeline shares
    "pipelines",  # each pipeline's Dagster side, and the cross-pipeline report
    "definitions",  # the one Definitions
    "cli",  # the mltrain CLI, demo, dev stack
)
# The modules of a pipeline folder that make its Dagster side; the rest (spec, contract, params, simulator,
# workloads/) is its dagster-free data plane.
DAGSTER_SIDE = {"assets", "definitions", "partitions", "report"}
SDK = "mltrain_assets.sdk"


def layer_of(module: str) -> str:
    parts = module.split(".")[1:]
    top = parts[0] if parts else ""
    if top == "pipelines":
        if parts[1:2] == ["reporting"]:
            return "pipelines"
        # A pipeline's package itself (its __init__) holds no code of either side.
        return "pipelines" if len(parts) > 2 and parts[2] in DAGSTER_SIDE else "base"
    return top if top in LAYERS else "base"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()


def imports(path: Path) -> list[tuple[int, str]]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from pkg import module`` depends on that module, not on the package.
            found += [
                (node.lineno, f"{target}.{alias.name}" if is_module(f"{target}.{alias.name}") else target)
                for alias in node.names
            ]
    return [(line, target) for line, target in found if target.startswith("mltrain_assets.")]


def test_every_import_points_down_or_sideways():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if module_name(path) == SDK:
            continue
        source = layer_of(module_name(path))
        for line, target in imports(path):
            if target == SDK:
                continue
            if LAYERS.index(layer_of(target)) > LAYERS.index(source):
                upward.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line} ({source}) imports {target} ({layer_of(target)})"
                )
    assert upward == [], "imports against the layering:\n" + "\n".join(upward)


def test_the_layering_is_not_vacuous():
    assert layer_of("mltrain_assets.core.steps") == "core"
    assert layer_of("mltrain_assets.pipelines.demand.workloads.train") == "base"
    assert layer_of("mltrain_assets.pipelines.demand.simulate") == "base"
    assert layer_of("mltrain_assets.resources.storage") == "resources"
    assert layer_of("mltrain_assets.pipelines.demand.assets") == "pipelines"
    assert layer_of("mltrain_assets.pipelines.reporting.assets") == "pipelines"
    assert any(target == "mltrain_assets.core.steps" for _, target in imports(PACKAGE / "core" / "assets.py"))
