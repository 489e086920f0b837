"""The churn pipeline's spec: all the shared code learns of it (dagster-free)."""

from mltrain_assets.registry import PipelineSpec, SimulateOption, Simulator
from mltrain_assets_tests.pipelines.churn_plugin import contract

spec = PipelineSpec(
    name="churn",
    title="Churn",
    group="churn",
    owners=("team:churn",),
    landing_dataset=contract.ACCOUNT_EVENTS,
    landing_window=contract.LANDING_WINDOW,
    simulator=Simulator(
        write_day="mltrain_assets_tests.pipelines.churn_plugin.simulate:write_account_events_day",
        volume_kwarg="rows_per_day",
        volume_flag="--account-events-per-day",
        options=(
            SimulateOption("--churn-signal", "signal", "how strongly minutes predict churn (0: not at all)", float),
        ),
    ),
    params_modules=("mltrain_assets_tests.pipelines.churn_plugin.params",),
    definitions="mltrain_assets_tests.pipelines.churn_plugin.definitions",
)
