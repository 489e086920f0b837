"""The `mltrain` CLI as a person meets it: every flag explained, `mltrain materialize` from the project folder,
and runs recorded under the code location the UI knows (so they can be re-executed there)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DagsterInstance, RunsFilter

from mltrain_assets.cli import build_cli, demo, main
from mltrain_assets.simulate import simulate

REPO_ROOT = Path(__file__).resolve().parents[2]
MLTRAIN = Path(sys.executable).parent / "mltrain"
DAY = "2026-02-10"


def test_every_option_of_every_subcommand_has_help():
    cli = build_cli()
    assert {"simulate", "demo", "summary", "dev", "backfill", "materialize", "manifests"} <= set(cli.commands)
    assert all(command.help for command in cli.commands.values()), "every subcommand has a one-line help"
    missing = [
        f"mltrain {name} {'/'.join(param.opts)}"
        for name, command in cli.commands.items()
        for param in command.params
        if isinstance(param, click.Option) and not param.help
    ]
    assert missing == [], f"options without help: {missing}"
    for name, command in cli.commands.items():
        with click.Context(command, info_name=name) as context:
            command.get_help(context)  # every help text formats


def test_dates_are_typed_and_the_version_is_shown(capsys):
    assert main(["summary", "--date", "2026-02-30"]) == 2
    assert capsys.readouterr().err == (
        "mltrain summary: Invalid value for '--date': '2026-02-30' is not a date: expected YYYY-MM-DD, e.g. 2026-11-27\n"
    )
    assert main(["--version"]) == 0
    assert "mltrain, version " in capsys.readouterr().out


def test_materialize_refuses_what_it_cannot_run_with_a_reason(mltrain_home, capsys):
    cases = [
        (["--asset", "no_such_asset", "--partition", DAY], "--asset: unknown asset 'no_such_asset': expected "),
        (["--asset", "ride_events"], "ride_events are partitioned: give --partition or --partition-range"),
        (["--asset", "ride_events", "--partition", "2019-01-01"], "2019-01-01 is before the first partition"),
        (["--asset", "city_demand_model", "--partition", DAY], "is partitioned by city x date: expected e.g. "),
        (["--asset", "city_demand_model", "--partition-range", f"nyc|{DAY}...nyc|{DAY}"], "no single-run backfill"),
        (["--asset", "ride_events", "--partition-range", DAY], "expected START...END"),
    ]
    for argv, reason in cases:
        assert main(["materialize", *argv]) == 2, argv
        refused = capsys.readouterr().err
        assert refused.startswith("mltrain materialize: ") and refused.count("\n") == 1, refused
        assert reason in refused, (argv, refused)


def test_materialize_works_from_the_project_folder_and_the_run_has_the_location_origin(mltrain_home):
    """The documented replacement for `dagster asset materialize` (which needs -m here): no flags but the selection."""
    simulate("rides", f"file://{mltrain_home}/landing", DAY, DAY, volume=2_000)
    done = subprocess.run(
        [str(MLTRAIN), "materialize", "--asset", "ride_events", "--partition", DAY],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ride_events {DAY}: ok in " in done.stdout
    assert f"check ride_events:landed_complete: passed: {DAY}: 24/24 hourly buckets, " in done.stdout

    instance = DagsterInstance.get()
    (run,) = instance.get_runs(limit=1)
    assert run.remote_job_origin is not None and run.remote_job_origin.location_name == "mltrain_assets"
    assert run.tags["mltrain/launched_by"] == "mltrain materialize" and run.tags["dagster/partition"] == DAY
    assert run.run_id in done.stdout
    assert run.asset_selection == {AssetKey("ride_events")}
    assert DAY in instance.get_materialized_partitions(AssetKey("ride_events"))
    # The catalog's figures on the materialization: rows and columns of the version's main table.
    from mltrain_assets.pipelines.demand.contract import RIDES

    event = instance.get_latest_materialization_event(AssetKey("ride_events")).asset_materialization
    assert event.partition == DAY
    events = pq.read_table(str(event.metadata["uri"].value).removeprefix("file://") + "/events.parquet")
    assert event.metadata["dagster/row_count"].value == events.num_rows > 0
    schema = event.metadata["dagster/column_schema"].schema
    assert [column.name for column in schema.columns] == RIDES.schema.names


def test_demo_runs_are_recorded_under_the_code_location_the_ui_loads(mltrain_home):
    """Without the origin the UI calls a run "from a different code location": no re-execution, no timeline row."""
    outcome = demo.execute("ride_events_job", "ride_events", partition_key=DAY)  # not landed: fails fast
    assert not outcome.success and "no _SUCCESS marker" in outcome.error

    instance = DagsterInstance.get()
    run = instance.get_run_by_id(outcome.run_id)
    origin = run.remote_job_origin
    assert origin is not None
    assert origin.location_name == "mltrain_assets" and origin.repository_origin.repository_name == "__repository__"
    assert origin.job_name == "ride_events_job"
    # Exactly the location workspace.yaml declares, which the webserver and the daemon load.
    assert origin.repository_origin.code_location_origin == demo.code_location_origin()
    assert demo.code_location_origin().loadable_target_origin.module_name == "mltrain_assets.definitions"
    # The UI filters and the Overview timeline find runs by this label.
    labelled = instance.get_runs(filters=RunsFilter(tags={".dagster/repository": "__repository__@mltrain_assets"}))
    assert [r.run_id for r in labelled] == [outcome.run_id]
    assert run.job_code_origin is not None  # and the run worker can still reconstruct the job here


def test_work_reaching_before_the_first_partition_is_refused_naming_the_setting(mltrain_home):
    from mltrain_assets.cli.backfill import partitions_by_assets
    from mltrain_assets.core.pipeline import load_pipeline

    selection = partitions_by_assets("demand", "2026-03-10", "2026-03-11")
    assert selection[0]["partitions"]["ranges"] == [{"start": "2026-02-04", "end": "2026-03-11"}]
    with pytest.raises(ValueError, match=r"needs days from 2025-12-\d\d, before the first partition 2026-01-01 "):
        partitions_by_assets("demand", "2026-01-05", "2026-01-06")
    with pytest.raises(SystemExit, match="MLTRAIN_PARTITIONS_START"):
        demo.run_pipeline(load_pipeline("demand"), "2026-01-05")
