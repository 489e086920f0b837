"""The recommendations pipeline, as the shared code sees it (dagster-free; registered in ``registry``)."""

from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.registry import PipelineSpec, SimulateOption, Simulator


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"must be a positive number, got {number}")
    return number


spec = PipelineSpec(
    name="recsys",
    title="Recommendations",
    group="recommendations",
    owners=("team:recommendations",),
    landing_dataset=contract.INTERACTIONS,
    landing_window=contract.LANDING_WINDOW,
    simulator=Simulator(
        write_day="mltrain_assets.pipelines.recsys.simulate:write_interactions_day",
        volume_kwarg="events_per_day",
        volume_flag="--events-per-day",
        options=(
            SimulateOption(
                "--users", "n_users", "users in the simulated world (interactions; default 10,000)", _positive
            ),
            SimulateOption(
                "--items", "n_items", "items in the simulated world (interactions; default 1,000)", _positive
            ),
        ),
    ),
    params_modules=("mltrain_assets.pipelines.recsys.params",),
    definitions="mltrain_assets.pipelines.recsys.definitions",
)
