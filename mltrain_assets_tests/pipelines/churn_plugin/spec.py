"""The churn pipeline's spec: all the shared code learns of it (dagster-free)."""

from mltrain_assets.sdk import LandingDataset, PipelineSpec, SimulateOption, Simulator

from . import contract

spec = PipelineSpec(
    name="churn",
    title="Churn",
    group="churn",
    owners=("team:churn",),
    landing_datasets=(
        LandingDataset(
            contract.ACCOUNT_EVENTS,
            contract.LANDING_WINDOW,
            Simulator(
                write_day=".simulate:write_account_events_day",  # relative to this package, as the modules below
                volume_kwarg="rows_per_day",
                volume_flag="--account-events-per-day",
                options=(
                    SimulateOption(
                        "--churn-signal", "signal", "how strongly minutes predict churn (0: not at all)", float
                    ),
                ),
            ),
        ),
    ),
    params_modules=(".params",),
    definitions=".definitions",
)
