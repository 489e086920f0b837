"""``mltrain report``: the model quality report without the UI, from the instance in DAGSTER_HOME and the registry."""

import json

from mltrain_assets.cli import main
from mltrain_assets.cli.demo import ensure_instance
from mltrain_assets.core.report import PNG_SIGNATURE
from mltrain_assets_tests.core.test_report import CITIES, DATE, DATES, build_world


def test_report_writes_the_markdown_and_the_plot_and_prints_the_markdown(mltrain_home, monkeypatch, capsys, tmp_path):
    import os

    monkeypatch.setenv("MLTRAIN_CITIES", ",".join(CITIES))
    # The state `make demo` would leave, in the places the settings name (instance, registry, landing zone).
    with ensure_instance() as instance:
        build_world(instance, mltrain_home, os.environ["MLFLOW_TRACKING_URI"])
    assert os.environ["MLTRAIN_LANDING_URI"] == f"file://{mltrain_home}/landing"
    out = tmp_path / "report"

    assert main(["report", "--date", DATE, "--out", str(out), "--history-days", str(len(DATES))]) == 0

    printed = capsys.readouterr()
    markdown = (out / "report.md").read_text()
    assert printed.out.strip() == markdown.strip()
    assert "| nyc | 0.100 | 0.300 | < 0.15 | pass | v2 promoted | 0 (2026-03-10) |" in markdown
    assert "| sf | 0.210 | 0.300 | < 0.15 | **FAIL**" in markdown
    assert "| recommender | 0.860 | > 0.82 | pass | v2 not promoted | 1 (2026-03-09) |" in markdown
    assert "| 2026-03-09 | not landed | **late** (+9.0 h) |" in markdown
    assert "![quality per date](quality.png)" in markdown
    assert (out / "quality.png").read_bytes().startswith(PNG_SIGNATURE)
    assert str(out / "report.md") in printed.err


def test_report_json_is_the_report_json_file(mltrain_home, capsys):
    out = mltrain_home / "report-json"
    assert main(["report", "--date", DATE, "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "report.json").read_text())
    assert printed["date"] == DATE and {"sections", "costs", "landings", "freshness"} <= set(printed)
