"""CPU, memory, GPUs, scratch, /dev/shm and timeouts are settings: profile defaults, step entries, overrides."""

import pytest

from mltrain_assets.resources.workload_resources import EMBEDDED, PROFILES, parse_overrides, resolve


def test_every_profile_has_every_field_it_needs():
    for profile in PROFILES:
        resources = resolve(profile)
        assert resources.cpu and resources.memory and resources.scratch and resources.timeout_s > 0


def test_a_step_entry_refines_its_profile():
    assert resolve("training", "city_demand_model").memory == "16Gi"  # LightGBM per city, not the GPU trainer
    assert resolve("training", "city_demand_model").shm == ""
    assert resolve("training", "recommender_model").shm == EMBEDDED["training"]["shm"]
    assert resolve("default", "demand_forecasts").timeout_s == 900


def test_overrides_layer_profile_then_step():
    overrides = parse_overrides(
        '{"training": {"memory": "128Gi", "timeout_s": 7200}, "recommender_model": {"shm": "32Gi"}}',
        steps={"recommender_model"},
    )
    resources = resolve("training", "recommender_model", overrides)
    assert (resources.memory, resources.timeout_s, resources.shm) == ("128Gi", 7200, "32Gi")
    # The step's embedded entry still beats the profile's override (it is more specific).
    assert resolve("training", "city_demand_model", overrides).memory == "16Gi"
    assert "memory 128Gi" in resources.describe() and "/dev/shm 32Gi" in resources.describe()


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
