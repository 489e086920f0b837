"""``mltrain``: simulate landing data, run the demo, show what is registered.

Click commands over the handlers in ``cli/commands.py``. The options a registered pipeline adds
(its simulator's flags, its volume flag for the demo, its key flag for backfills) come from its
spec, so the command group is built per invocation (``build_cli``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import warnings
from collections.abc import Callable
from importlib.metadata import version

import click

from mltrain_assets.cli import commands, model_commands
from mltrain_assets.cli.errors import USAGE_EXIT_CODE, UsageError
from mltrain_assets.registry import pipeline_names, specs
from mltrain_assets.simulate import option_name


class IsoDate(click.ParamType):
    """A calendar date, ``YYYY-MM-DD``; the handlers get it back as that string."""

    name = "YYYY-MM-DD"

    def convert(self, value, param, ctx) -> str:
        try:
            return dt.date.fromisoformat(str(value)).isoformat()
        except ValueError:
            self.fail(f"{value!r} is not a date: expected YYYY-MM-DD, e.g. 2026-11-27", param, ctx)


DATE = IsoDate()
JSON_FLAG = click.Option(["--json", "as_json"], is_flag=True, help="print JSON instead of text")


def _command(name: str, handler: Callable[[argparse.Namespace], int], help: str, *params: click.Parameter):
    """A subcommand whose parsed options reach ``handler`` as one namespace (the handlers' shape).

    Every command reads settings: they are checked first, before the handler imports or creates anything.
    """

    def run(**values) -> int:
        from mltrain_assets.settings import validate_settings

        validate_settings()  # a SettingsError is the user's: main prints its one line
        return handler(argparse.Namespace(**values))

    return click.Command(name, callback=run, params=list(params), help=help)


def _option(*flags: str, **kwargs) -> click.Option:
    return click.Option(list(flags), **kwargs)


def _init() -> click.Command:
    return _command(
        "init",
        commands._cmd_init,
        "Create MLTRAIN_HOME and DAGSTER_HOME, make pool slot claims exclusive and write the pool limits "
        "(MLTRAIN_POOL_LIMITS) into the instance; print the effective settings.",
        _option(
            "--pools",
            is_flag=True,
            help="only guard the slot claims and write the pool limits into the instance at DAGSTER_HOME as it is "
            "(the Kubernetes init container)",
        ),
    )


def _simulator_options() -> list[click.Option]:
    """Each registered simulator's own options (``--cities``, ``--users``, ...), as its spec declares them."""
    found = {
        option.flag: option
        for spec in specs()
        for landing in spec.landing_datasets
        for option in landing.simulator.options
    }
    return [_option(flag, option_name(flag), help=option.help) for flag, option in found.items()]


def _simulate() -> click.Command:
    volume_flags = list(dict.fromkeys(x.simulator.volume_flag for spec in specs() for x in spec.landing_datasets))
    return _command(
        "simulate",
        commands._cmd_simulate,
        "Write synthetic landing days.",
        _option(
            "--dataset", type=click.Choice(commands._landing_dataset_names()), required=True, help="landing dataset"
        ),
        _option("--start", type=DATE, required=True, help="first date"),
        _option("--end", type=DATE, help="last date, inclusive (default: --start)"),
        _option("--rows-per-day", *volume_flags, "volume", type=int, help="rows per day (all keys)"),
        *_simulator_options(),
        _option("--landing-uri", help="default: $MLTRAIN_LANDING_URI"),
        _option("--skip-landed", is_flag=True, help="keep days whose _SUCCESS already exists"),
    )


def _pipeline_option() -> click.Option:
    return _option("--pipeline", type=click.Choice(pipeline_names()), multiple=True, help="repeatable; default all")


def _demo() -> click.Command:
    volumes = [
        _option(landing.simulator.volume_flag, f"volume_{landing.name}", type=int, help=f"{landing.name} per day")
        for spec in specs()
        for landing in spec.landing_datasets
    ]
    return _command(
        "demo",
        commands._cmd_demo,
        "Simulate, then materialize the pipelines for one date.",
        _option("--date", type=DATE, help="partition date (default: yesterday, UTC)"),
        *volumes,
        _pipeline_option(),
        _option("--parallel", type=int, default=2, show_default=True, help="key partitions (cities) at once"),
        _option(
            "--days",
            type=int,
            default=1,
            show_default=True,
            help="the last N dates up to --date; N > 1 runs them as asset backfills through a Dagster daemon started for it",
        ),
    )


def _backfill() -> click.Command:
    key_flags = list(dict.fromkeys(spec.keys.flag for spec in specs() if spec.keys))
    return _command(
        "backfill",
        commands._cmd_backfill,
        "Launch a date-range asset backfill through the Dagster webserver.",
        _option("--start", type=DATE, required=True, help="first partition date"),
        _option("--end", type=DATE, required=True, help="last partition date, inclusive"),
        _pipeline_option(),
        _option("--keys", *key_flags, "keys", help="comma-separated subset of keys for the keyed assets"),
        _option("--url", default="http://127.0.0.1:3000", show_default=True, help="Dagster webserver"),
        _option("--wait", is_flag=True, help="poll until the backfill finishes"),
        _option("--timeout", type=float, default=3600, show_default=True, help="seconds --wait polls"),
    )


def _model_version(name: str, handler, help: str, *params: click.Parameter) -> click.Command:
    model = click.Argument(["model"])  # e.g. demand-forecast-nyc or recommender
    return _command(name, handler, help, model, click.Argument(["version"]), *params)


def _report() -> click.Command:
    from mltrain_assets.core.report import DEFAULT_GRACE_HOURS, DEFAULT_HISTORY_DAYS

    return _command(
        "report",
        commands._cmd_report,
        "Model quality, cost, staleness and freshness for a date, from the Dagster instance and the registry: "
        "writes report.md, quality.png and report.json and prints the Markdown (what model_quality_report shows).",
        _option("--date", type=DATE, help="report date (default: yesterday, UTC)"),
        _option("--out", help="folder for report.md, quality.png, report.json (default: $MLTRAIN_HOME/reports/DATE)"),
        _option("--history-days", type=int, default=DEFAULT_HISTORY_DAYS, show_default=True, help="dates plotted"),
        _option(
            "--grace-hours",
            type=float,
            default=DEFAULT_GRACE_HOURS,
            show_default=True,
            help="a landed day is late when its _SUCCESS marker appears later than this after the end of the day, UTC",
        ),
        JSON_FLAG,
    )


def _simple_commands() -> list[click.Command]:
    """The subcommands of a few options each."""
    return [
        _command("summary", commands._cmd_summary, "What is registered and aliased `staging`.",
                 _option("--date", type=DATE, help="partition date (default: yesterday, UTC)"), JSON_FLAG),
        _command("dev", commands._cmd_dev, "Dagster webserver + daemon and the MLflow UI on 127.0.0.1.",
                 _option("--port", type=int, default=3000, show_default=True, help="Dagster UI port"),
                 _option("--mlflow-port", type=int, default=5000, show_default=True, help="MLflow UI port")),
        _command("heal", commands._cmd_heal,
                 "Fail the runs whose run worker died on this host (kill -9, OOM) and free the pool slots of runs "
                 "that ended (what the daemon's run monitoring does; materialize and demo do it before each launch); "
                 "then delete the workload objects (pods, jobs, services; k8s-local's processes) of runs that ended.",
                 _option("--dry-run", is_flag=True, help="only print what it would do")),
        _command("schema", commands._cmd_schema, "Print the landing datasets' schemas and rules."),
        _command("materialize", commands._cmd_materialize,
                 "Materialize assets for one partition (or a range, in one run) in this process, recorded under the "
                 "mltrain_assets code location like a UI launch (what `dagster asset materialize` does, without -m).",
                 _option("--asset", required=True, help="asset key(s), comma-separated, e.g. ride_events"),
                 _option("--partition", help="partition key: 2026-11-27, or nyc|2026-11-27 for date x city"),
                 _option("--partition-range", help="START...END, e.g. 2026-11-01...2026-11-07 (single-run assets)"),
                 _option("--config", help='run config file (YAML or JSON) with the assets\' hyperparameters, as the '
                         'UI launchpad shows it: {"ops": {"city_demand_model": {"config": {"learning_rate": 0.1}}}}')),
        _model_version("lineage", model_commands._cmd_lineage,
                       "Everything a registered model version came from: its runs, code commit, params, and every "
                       "input version down to the landed days (with their fingerprints).", JSON_FLAG),
        _model_version("reproduce", model_commands._cmd_reproduce,
                       "Rebuild a registered model version from its lineage in a scratch store and say whether every "
                       "file (the weights too) and the metrics are equal.",
                       _option("--scratch", help="folder to rebuild in (default: $MLTRAIN_HOME/reproductions/MODEL-vN)")),
        _command("relocate", model_commands._cmd_relocate,
                 "Point MLflow's recorded artifact locations at a new root after moving them (a bucket renamed).",
                 _option("--from", "old", required=True, help="the old root, e.g. s3://old-bucket/mlartifacts"),
                 _option("--to", "new", required=True, help="the new root, e.g. s3://new-bucket/mlartifacts")),
        _command("manifests", commands._cmd_manifests,
                 "Print the Kubernetes objects the k8s backend would submit for one step (validated), like helm template.",
                 _option("--asset", required=True, help="asset key, e.g. recommender_model"),
                 _option("--partition", help="partition key: 2026-11-27, or nyc|2026-11-27 for date x city")),
    ]  # fmt: skip


def build_cli() -> click.Group:
    group = click.Group("mltrain", help="Simulate landing data, run the demo, show what is registered and why.")
    for command in (_init(), _simulate(), _demo(), _backfill(), _report(), *_simple_commands()):
        group.add_command(command)
    return click.version_option(version("mltrain_assets"), prog_name="mltrain")(group)


def _command_name(cli: click.Group, argv: list[str]) -> str:
    """``mltrain <command>`` for the first argument naming a subcommand, else ``mltrain``."""
    name = next((arg for arg in argv if arg in cli.commands), None)
    return f"mltrain {name}" if name else "mltrain"


def refuse(prefix: str, message: str) -> int:
    """A user's mistake: one line on stderr, exit code 2 (anything else that escapes is a bug: its traceback stays)."""
    print(f"{prefix}: {' '.join(message.split())}", file=sys.stderr)
    return USAGE_EXIT_CODE


def main(argv: list[str] | None = None) -> int:
    from mltrain_assets.settings import SettingsError

    # Dagster flags beta/preview APIs on every use; the CLI's readers want progress, not that.
    warnings.filterwarnings("ignore", message=".*(beta|preview).*", category=Warning)
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cli = build_cli()  # reads the registered pipelines' specs (their datasets and options)
    except ValueError as refused:  # MLTRAIN_PIPELINES (or a setting a spec reads) names what cannot load
        return refuse("mltrain", str(refused))
    try:
        result = cli.main(args=argv, prog_name="mltrain", standalone_mode=False)
    except click.exceptions.Exit as done:  # --help, --version
        return done.exit_code
    except click.UsageError as refused:  # click's own: a bad flag, a missing argument, a value of the wrong type
        prefix = refused.ctx.command_path if refused.ctx is not None else _command_name(cli, argv)
        message = refused.format_message()
        if message.startswith("No such command"):
            message += f" The commands: {', '.join(sorted(cli.commands))}."
        return refuse(prefix, message)
    except (UsageError, SettingsError) as refused:
        return refuse(_command_name(cli, argv), str(refused))
    except click.ClickException as refused:
        refused.show()
        return refused.exit_code
    except click.Abort:
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
