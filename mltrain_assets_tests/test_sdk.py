"""A pipeline imports only ``mltrain_assets.sdk`` of the shared code, and the sdk costs a workload no Dagster.

Every registered pipeline is held to it: the test plugin's package (all its modules, its workload included)
and each built-in pipeline's own modules (``pipelines/<name>/*.py``; its ``workloads/`` data plane may use
``workloads.common`` directly).
"""

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mltrain_assets import sdk
from mltrain_assets.registry import BUILT_IN_PIPELINES, spec_module

REPO_ROOT = Path(__file__).resolve().parents[1]
PLUGIN_SPEC = "mltrain_assets_tests.pipelines.churn_plugin.spec"


def _package_dir(entry: str) -> tuple[str, Path]:
    module = spec_module(entry)
    found = importlib.util.find_spec(module)
    assert found is not None and found.origin, module
    return module.rpartition(".")[0], Path(found.origin).parent


def _pipeline_modules() -> list[tuple[str, Path]]:
    """(the pipeline's package, one of its modules) for every pipeline's authored modules."""
    modules = []
    for entry in (*BUILT_IN_PIPELINES, PLUGIN_SPEC):
        package, folder = _package_dir(entry)
        # A built-in's workloads/ is its data plane (may use workloads.common); a plugin is held whole.
        files = folder.glob("*.py") if entry in BUILT_IN_PIPELINES else folder.rglob("*.py")
        modules += [(package, path) for path in sorted(files)]
    return modules


def internal_imports(path: Path, own_package: str) -> list[str]:
    """``file:line module`` for each import of ``mltrain_assets`` other than the sdk and the pipeline's own package."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue  # a relative import stays inside the pipeline's package
        for name in names:
            allowed = name == "mltrain_assets.sdk" or name == own_package or name.startswith(own_package + ".")
            if name.split(".")[0] == "mltrain_assets" and not allowed:
                found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {name}")
    return found


def test_every_pipeline_imports_only_the_sdk_of_the_shared_code():
    modules = _pipeline_modules()
    assert {path.name for _, path in modules} >= {"spec.py", "definitions.py", "train.py", "assets.py"}
    offending = [line for package, path in modules for line in internal_imports(path, package)]
    assert offending == [], "import these through mltrain_assets.sdk:\n" + "\n".join(offending)


def test_the_import_check_names_file_and_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO_ROOT", tmp_path)
    module = tmp_path / "my_pipeline" / "assets.py"
    module.parent.mkdir()
    module.write_text(
        "from mltrain_assets.sdk import Step\n"
        "from my_pipeline.contract import X\n"
        "from . import spec\n"
        "from mltrain_assets.core.assets import Step\n"
        "import mltrain_assets.resources.tracking\n"
    )
    assert internal_imports(module, "my_pipeline") == [
        "my_pipeline/assets.py:4 mltrain_assets.core.assets",
        "my_pipeline/assets.py:5 mltrain_assets.resources.tracking",
    ]


def test_every_sdk_name_resolves_and_is_listed():
    assert sorted(sdk.__all__) == sorted(sdk._EXPORTS)
    assert set(dir(sdk)) >= set(sdk.__all__)
    for name in sdk.__all__:
        assert getattr(sdk, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        sdk.Nope  # noqa: B018


# What a workload and a simulator import (the churn plugin's train.py and simulate.py, a params module).
WORKLOAD_NAMES = [
    "ArtifactWriter",
    "read_table",
    "EVENTS_FILE",
    "Reporter",
    "workload_main",
    "ensure_experiment",
    "run_tags",
    "use_tracking",
    "WorkloadParams",
    "MlflowSettings",
    "workload",
    "input_uri",
    "service",
    "PipelineSpec",
    "DatasetSpec",
    "Window",
    "filesystem",
    "hour_uri",
    "success_uri",
]


def test_a_workloads_sdk_names_do_not_import_dagster():
    script = (
        "import json, sys\n"
        f"from mltrain_assets.sdk import {', '.join(WORKLOAD_NAMES)}\n"
        f"import {PLUGIN_SPEC.rpartition('.')[0]}.train\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
