"""README's "Adding a pipeline", followed verbatim: its files build a fourth pipeline that lands, trains and registers.

The section's ```python blocks marked ``# file: my_pipeline/<module>.py`` are written into a package in a
temporary folder, registered through ``MLTRAIN_PIPELINES`` (as ``test_plugin_pipeline.py`` registers the
churn plugin) and run through the CLI.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mltrain_assets.landing import day_status

REPO_ROOT = Path(__file__).resolve().parents[1]
MLTRAIN = Path(sys.executable).with_name("mltrain")
DATE = "2026-11-20"
BLOCK = re.compile(r"```python\n# file: (?P<path>\S+)\n(?P<code>.*?)```", re.DOTALL)

pytestmark = pytest.mark.timeout(600)


def section_files() -> dict[str, str]:
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index("### Adding a pipeline\n")
    end = readme.index("\n## ", start)
    return {match["path"]: match["code"] for match in BLOCK.finditer(readme[start:end])}


@pytest.fixture
def readme_pipeline(tmp_path, mltrain_home) -> dict:
    for path, code in section_files().items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(code)
    return {
        **os.environ,
        "MLTRAIN_PIPELINES": "demand,recsys,my_pipeline.spec",
        "PYTHONPATH": os.pathsep.join((str(tmp_path), str(REPO_ROOT))),  # importable by the CLI and its workloads
        "PYTHONWARNINGS": "ignore",
    }


def _mltrain(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(MLTRAIN), *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=420)


def test_the_section_holds_every_file_of_a_pipeline_on_the_sdk_alone(tmp_path):
    files = section_files()
    modules = ("__init__", "contract", "simulate", "params", "train", "spec", "definitions")
    assert set(files) == {f"my_pipeline/{name}.py" for name in modules}
    offending = []
    for path, code in files.items():
        imported = re.findall(r"^\s*(?:from|import) (mltrain_assets[\w.]*)", code, re.MULTILINE)
        offending += [f"{path}: {name}" for name in imported if name != "mltrain_assets.sdk"]
    assert offending == []


@pytest.mark.slow
def test_following_the_section_builds_a_working_fourth_pipeline(readme_pipeline):
    landed = _mltrain(readme_pipeline, "simulate", "--dataset", "page_views", "--start", DATE)
    assert landed.returncode == 0, landed.stdout + landed.stderr
    assert "wrote 1,200 page_views rows" in landed.stdout
    assert day_status(readme_pipeline["MLTRAIN_LANDING_URI"], "page_views", DATE)["success"]

    # Its definitions load beside the built-in ones; it ingests, trains, passes its AUC gate, registers, promotes.
    done = _mltrain(readme_pipeline, "demo", "--pipeline", "conversion", "--date", DATE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "page_views_ingested: ok" in done.stdout
    assert "conversion_model -> registered_conversion_model: ok" in done.stdout and "v1 promoted" in done.stdout
