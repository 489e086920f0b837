"""The demand-forecasting pipeline, as the shared code sees it (dagster-free; registered in ``registry``)."""

from mltrain_assets.pipelines.demand import contract
from mltrain_assets.sdk import KeySetting, LandingDataset, PipelineSpec, SimulateOption, Simulator


def _cities(value: str) -> list[str]:
    return [city.strip() for city in value.split(",") if city.strip()]


# The cities this deployment models: the key dimension of the per-city model (date x city).
CITY_KEYS = KeySetting(env="MLTRAIN_CITIES", known=contract.CITIES, flag="--cities", what="city")

spec = PipelineSpec(
    name="demand",
    title="Demand forecasting",
    group="demand_forecasting",
    owners=("team:demand-forecasting",),
    landing_datasets=(
        LandingDataset(
            contract.RIDES,
            contract.LANDING_WINDOW,
            Simulator(
                write_day=".simulate:write_rides_day",
                volume_kwarg="rides_per_day",
                volume_flag="--rides-per-day",
                keys_option="cities",
                options=(SimulateOption("--cities", "cities", "comma-separated subset of cities (rides)", _cities),),
            ),
        ),
    ),
    params_modules=(".params",),
    definitions=".definitions",
    moved_modules={"mltrain_assets.workloads.demand": ".workloads"},  # before each pipeline was one folder
    keys=CITY_KEYS,
)
