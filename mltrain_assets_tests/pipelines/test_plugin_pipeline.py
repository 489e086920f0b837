"""A third pipeline registered through its spec alone lands, ingests, trains, gates and reports via the same CLI.

The pipeline (``churn_plugin/``) lives in the tests; ``MLTRAIN_PIPELINES`` names its spec next to the
built-in two. Nothing under ``mltrain_assets`` names it.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MLTRAIN = Path(sys.executable).with_name("mltrain")
SPEC = "mltrain_assets_tests.pipelines.churn_plugin.spec"
GOOD_DAY, NO_SIGNAL_DAY = "2026-11-20", "2026-11-21"

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def plugin_env(mltrain_home):
    # PYTHONPATH: the plugin is importable by the CLI and by its workloads, as an installed package would be.
    return {
        **os.environ,
        "MLTRAIN_PIPELINES": f"demand,recsys,{SPEC}",
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONWARNINGS": "ignore",
    }


def _mltrain(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(MLTRAIN), *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=420)


def test_no_shared_file_names_the_plugin_pipeline():
    named = [
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / "mltrain_assets").rglob("*.py")
        if any(word in path.read_text() for word in ("churn_plugin", "account_events"))
    ]
    assert named == []


def test_an_unknown_pipeline_module_is_refused_naming_the_setting(plugin_env):
    done = _mltrain({**plugin_env, "MLTRAIN_PIPELINES": "demand,my_company.nowhere.spec"}, "schema")
    assert done.returncode != 0
    assert "MLTRAIN_PIPELINES" in done.stdout + done.stderr and "my_company.nowhere.spec" in done.stdout + done.stderr


@pytest.mark.slow
def test_a_pipeline_registered_by_its_spec_runs_through_the_cli(plugin_env, mltrain_home):
    help_text = _mltrain(plugin_env, "simulate", "--help").stdout
    assert "--churn-signal" in help_text and "--account-events-per-day" in help_text

    schema = _mltrain(plugin_env, "schema")
    assert schema.returncode == 0 and "account_events" in schema.stdout and "non_negative_minutes" in schema.stdout

    landed = _mltrain(
        plugin_env, "simulate", "--dataset", "account_events", "--start", NO_SIGNAL_DAY, "--churn-signal", "0"
    )
    assert landed.returncode == 0, landed.stderr
    assert "wrote 2,400 account_events rows" in landed.stdout
    refused = _mltrain(plugin_env, "simulate", "--dataset", "account_events", "--start", GOOD_DAY, "--cities", "nyc")
    assert refused.returncode != 0 and "do not apply to dataset 'account_events'" in refused.stderr

    # Lands (the demo simulates the day), ingests, trains, passes the gate, registers and promotes.
    good = _mltrain(plugin_env, "demo", "--pipeline", "churn", "--date", GOOD_DAY)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "account_events_ingested: ok" in good.stdout
    assert "churn_model -> registered_churn_model: ok" in good.stdout and "v1 promoted" in good.stdout
    assert f"churn, {GOOD_DAY}: churn-classifier v1 is `staging`" in good.stdout

    # No signal: the AUC gate fails, nothing is registered, `staging` stays on v1.
    bad = _mltrain(plugin_env, "demo", "--pipeline", "churn", "--date", NO_SIGNAL_DAY)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "churn_model -> registered_churn_model: FAILED" in bad.stdout
    assert "churn-classifier v1 is `staging`" in bad.stdout

    report = _mltrain(plugin_env, "report", "--date", NO_SIGNAL_DAY, "--out", str(mltrain_home / "report"))
    assert report.returncode == 0, report.stderr
    assert "## Churn: AUC > 0.7" in report.stdout
    figures = json.loads((mltrain_home / "report" / "report.json").read_text())
    (section,) = [s for s in figures["sections"] if s["title"] == "Churn"]
    (row,) = section["rows"]
    assert row["gate_passed"] is False and row["value"] < 0.7 and row["version"] is None
    assert row["staging_now"].startswith(f"v1 ({GOOD_DAY})")
    freshness = {r["asset"]: r for r in figures["freshness"] if r["pipeline"] == "churn"}
    assert set(freshness) == {"account_events_ingested", "churn_model", "registered_churn_model"}
    assert freshness["churn_model"]["last_updated"] and freshness["churn_model"]["warn_hours"] == 32

    lineage = _mltrain(plugin_env, "lineage", "churn-classifier", "1")
    assert lineage.returncode == 0, lineage.stderr
    assert "workload mltrain_assets_tests.pipelines.churn_plugin.train" in lineage.stdout
    assert f'params {{"date": "{GOOD_DAY}"}}' in lineage.stdout
    assert f"account_events_ingested {GOOD_DAY}" in lineage.stdout
    built_from = json.loads(_mltrain(plugin_env, "lineage", "churn-classifier", "1", "--json").stdout)["built_from"]
    assert built_from["asset"] == "churn_model" and built_from["inputs"][0]["asset"] == "account_events_ingested"

    served = json.loads(_mltrain(plugin_env, "summary", "--date", NO_SIGNAL_DAY, "--json").stdout)
    (model,) = served["pipelines"]["churn"]["models"]
    assert model["model"] == "churn-classifier" and model["staging_version"] == "1" and model["auc"] > 0.7
