"""The recommendations pipeline, as the shared code sees it (dagster-free; registered in ``registry``)."""

from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.sdk import LandingDataset, PipelineSpec, SimulateOption, Simulator


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
    landing_datasets=(
        LandingDataset(
            contract.INTERACTIONS,
            contract.LANDING_WINDOW,
            Simulator(
                write_day=".simulate:write_interactions_day",
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
        ),
    ),
    params_modules=(".params",),
    definitions=".definitions",
    moved_modules={"mltrain_assets.workloads.recsys": ".workloads"},  # before each pipeline was one folder
)
