"""CPU, memory, GPUs, scratch, /dev/shm and timeouts: profile defaults, overrides, what a workload declares."""

import pytest

from mltrain_assets.launch.workload_resources import EMBEDDED, PROFILES, parse_overrides, resolve


def test_every_profile_has_every_field_it_needs():
    for profile in PROFILES:
        resources = resolve(profile)
        assert resources.cpu and resources.memory and resources.scratch and resources.timeout_s > 0


def test_a_workloads_declared_resources_refine_its_profile():
    """What a workload declares on ``@workload(resources=...)``; shared code names no step."""
    from mltrain_assets.pipelines.demand.params import ForecastParams, TrainParams
    from mltrain_assets.pipelines.recsys.params import EvaluateParams
    from mltrain_assets.pipelines.recsys.params import TrainParams as RecommenderTrainParams

    city_model = resolve("training", "city_demand_model", declared=TrainParams.resources)
    assert (city_model.memory, city_model.shm, city_model.timeout_s) == ("16Gi", "", 1800)  # LightGBM per city, CPU
    assert resolve("training", "recommender_model", declared=RecommenderTrainParams.resources).shm == "16Gi"
    assert resolve("default", "demand_forecasts", declared=ForecastParams.resources).timeout_s == 900
    assert resolve("default", "registered_recommender", declared=EvaluateParams.resources).timeout_s == 900
    assert set(EMBEDDED) == set(PROFILES), "the embedded table holds profiles only"


def test_overrides_layer_profile_then_declared_then_step():
    from mltrain_assets.pipelines.demand.params import TrainParams

    overrides = parse_overrides(
        '{"training": {"memory": "128Gi", "timeout_s": 7200}, "recommender_model": {"shm": "32Gi"}}',
        steps={"recommender_model"},
    )
    resources = resolve("training", "recommender_model", overrides)
    assert (resources.memory, resources.timeout_s, resources.shm) == ("128Gi", 7200, "32Gi")
    # The workload's declaration still beats the profile's override (it is more specific)...
    assert resolve("training", "city_demand_model", overrides, declared=TrainParams.resources).memory == "16Gi"
    # ... and a step's override, by asset name, beats the declaration.
    by_step = parse_overrides('{"city_demand_model": {"memory": "24Gi"}}', steps={"city_demand_model"})
    assert resolve("training", "city_demand_model", by_step, declared=TrainParams.resources).memory == "24Gi"
    assert "memory 128Gi" in resources.describe() and "/dev/shm 32Gi" in resources.describe()


def test_a_bad_declaration_is_refused_naming_the_workload_and_field():
    with pytest.raises(ValueError, match=r"resources declared by my\.workload: memroy: unknown field"):
        resolve("default", "x", declared={"memroy": "1Gi"}, declared_by="my.workload")
    with pytest.raises(ValueError, match=r"timeout_s: 0 is not a whole number >= 1"):
        resolve("default", "x", declared={"timeout_s": 0}, declared_by="my.workload")


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ('{"training": {"memroy": "1Gi"}}', "training.memroy: unknown field"),
        ('{"spark": {"memory": "lots"}}', "spark.memory: 'lots' is not a Kubernetes quantity"),
        ('{"default": {"timeout_s": 0}}', "default.timeout_s: 0 is not a whole number >= 1"),
        ('{"nope": {"cpu": "1"}}', "'nope' is neither a profile"),
        ("[]", "must be a JSON object"),
    ],
)
def test_bad_overrides_are_named(raw, named):
    with pytest.raises(ValueError, match="MLTRAIN_WORKLOAD_RESOURCES") as refused:
        parse_overrides(raw, steps={"recommender_model"})
    assert named in str(refused.value)
