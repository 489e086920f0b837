"""The demand-forecasting pipeline, as the shared code sees it (dagster-free; registered in ``registry``)."""

from mltrain_assets.pipelines.demand import contract
from mltrain_assets.registry import PipelineSpec, SimulateOption, Simulator


def _cities(value: str) -> list[str]:
    return [city.strip() for city in value.split(",") if city.strip()]


def _known_cities(value: str) -> bool:
    cities = _cities(value)
    return bool(cities) and set(cities) <= set(contract.CITIES)


spec = PipelineSpec(
    name="demand",
    title="Demand forecasting",
    group="demand_forecasting",
    owners=("team:demand-forecasting",),
    landing_dataset=contract.RIDES,
    landing_window=contract.LANDING_WINDOW,
    simulator=Simulator(
        write_day="mltrain_assets.pipelines.demand.simulate:write_rides_day",
        volume_kwarg="rides_per_day",
        volume_flag="--rides-per-day",
        keys_option="cities",
        options=(SimulateOption("--cities", "cities", "comma-separated subset of cities (rides)", _cities),),
    ),
    params_modules=("mltrain_assets.pipelines.demand.params",),
    definitions="mltrain_assets.pipelines.demand.definitions",
    settings={"MLTRAIN_CITIES": (_known_cities, f"a comma-separated subset of {', '.join(contract.CITIES)}")},
    optional_empty_settings=frozenset({"MLTRAIN_CITIES"}),
    key_flag="--cities",
)
