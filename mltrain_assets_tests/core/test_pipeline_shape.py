"""A pipeline's shape from its spec and jobs: several landing datasets, one key setting, one model stage."""

import pyarrow as pa
import pytest

from mltrain_assets import registry
from mltrain_assets.sdk import (
    ArtifactRef,
    AssetExecutionContext,
    DatasetSpec,
    KeySetting,
    LandingDataset,
    PipelineJob,
    PipelineSpec,
    Registration,
    Simulator,
    Window,
    define_pipeline,
    landing_ingestion_asset,
    metric_above,
    model_stage,
)
from mltrain_assets.settings import settings_problems

KEYS = KeySetting(env="MLTRAIN_CITIES", known=("nyc", "sf"), flag="--cities", what="city")


def _dataset(name: str) -> DatasetSpec:
    return DatasetSpec(
        name, pa.schema([pa.field("id", pa.string()), pa.field("at", pa.timestamp("us", "UTC"))]), "id", "at", {}, 10
    )


def _landing(name: str, days: int) -> LandingDataset:
    return LandingDataset(_dataset(name), Window(days=days), Simulator(f".simulate:write_{name}", "rows", f"--{name}"))


TWO = PipelineSpec(
    name="two",
    title="Two",
    group="two",
    owners=("team:two",),
    landing_datasets=(_landing("clicks", 1), _landing("orders", 3)),
    params_modules=(),
    definitions=".definitions",
)


def test_a_pipeline_with_two_landing_datasets_gets_an_ingestion_sensor_and_schedule_per_dataset():
    clicks = landing_ingestion_asset(TWO, "clicks", description="Clicks.")
    orders = landing_ingestion_asset(TWO, "orders", description="Orders.")
    pipeline = define_pipeline(
        TWO,
        ingestion=(PipelineJob("clicks_job", (clicks,), "Clicks."), PipelineJob("orders_job", (orders,), "Orders.")),
        stages=(),
        fallback_cron="0 5 * * *",
    )
    assert [(x.dataset, x.asset, x.job) for x in pipeline.landings] == [
        ("clicks", "clicks_ingested", "clicks_job"),
        ("orders", "orders_ingested", "orders_job"),
    ]
    assert pipeline.landing_window == Window(days=3)  # the widest: what a date needs landed of every dataset
    assert {s.name for s in pipeline.defs.sensors} == {"clicks_landing_sensor", "orders_landing_sensor"}
    assert {s.name for s in pipeline.defs.schedules} == {"clicks_daily_schedule", "orders_daily_schedule"}
    assert pipeline.assets()[:2] == ("clicks_ingested", "orders_ingested")


def test_a_landing_dataset_without_an_ingestion_job_is_refused_by_name():
    clicks = landing_ingestion_asset(TWO, "clicks", description="Clicks.")
    with pytest.raises(ValueError, match=r"pipeline two: no ingestion job lands \['orders'\]"):
        define_pipeline(
            TWO, ingestion=PipelineJob("clicks_job", (clicks,), "Clicks."), stages=(), fallback_cron="0 5 * * *"
        )
    with pytest.raises(ValueError, match=r"name the dataset to ingest, one of \['clicks', 'orders'\]"):
        landing_ingestion_asset(TWO, description="Which one?")
    with pytest.raises(ValueError, match="pipeline 'two' lands no dataset 'views'"):
        landing_ingestion_asset(TWO, "views", description="Views.")


def test_the_old_single_landing_fields_are_refused():
    with pytest.raises(TypeError, match="landing_dataset"):
        PipelineSpec(  # type: ignore[call-arg]
            name="old",
            title="Old",
            group="old",
            owners=(),
            landing_dataset=_dataset("x"),
            params_modules=(),
            definitions="",
        )


def test_the_key_setting_is_parsed_in_one_place_and_named_in_its_errors(monkeypatch):
    assert KEYS.parse(None) == ["nyc", "sf"] and KEYS.parse("") == ["nyc", "sf"] and KEYS.parse(" sf ,") == ["sf"]
    with pytest.raises(ValueError, match=r"MLTRAIN_CITIES='sf,paris': unknown city 'paris': expected .* nyc, sf"):
        KEYS.parse("sf,paris")
    monkeypatch.setenv("MLTRAIN_CITIES", "sf")
    assert registry.configured_keys(KEYS) == ["sf"]
    # The built-in demand pipeline declares its cities this way; the settings check reads the same rule.
    monkeypatch.setenv("MLTRAIN_CITIES", "nyc,atlantis")
    (problem,) = [p for p in settings_problems() if p.startswith("MLTRAIN_CITIES")]
    assert "nyc, sf, chicago" in problem


def test_a_spec_names_its_modules_relative_to_its_package():
    spec = registry.load_spec("mltrain_assets_tests.pipelines.churn_plugin.spec")
    assert registry.definitions_module(spec) == "mltrain_assets_tests.pipelines.churn_plugin.definitions"
    assert registry.resolve_module(spec, ".params") == "mltrain_assets_tests.pipelines.churn_plugin.params"
    with pytest.raises(ValueError, match=r"'\.definitions' is relative, but its spec was not loaded by name"):
        registry.definitions_module(TWO)


def test_a_model_stage_states_its_gate_and_name_once():
    spec = PipelineSpec(
        name="one", title="One", group="one", owners=(), landing_datasets=(_landing("events", 1),),
        params_modules=(), definitions="",
    )  # fmt: skip
    gate = metric_above("one_auc", "auc", 0.7)
    stage = model_stage(spec, gate, "one-model")
    from mltrain_assets.workloads.ingest.params import IngestParams  # any workload params: the step is not run

    @stage.model(IngestParams)
    def one_model(context: AssetExecutionContext) -> None:
        """A model."""

    with pytest.raises(TypeError, match="takes no `one_model`"):

        @stage.registration
        def wrong(context: AssetExecutionContext, other: ArtifactRef) -> Registration: ...

    @stage.registration
    def registered_one_model(context: AssetExecutionContext, one_model: ArtifactRef) -> Registration:
        return Registration(one_model.metadata["uri"], upstream={"one_model": one_model})

    assert [key.name for key in one_model.check_keys] == ["one_auc"]
    assert registered_one_model.required_resource_keys >= {"registry"}
    assert "registered as `one-model`" in (registered_one_model.descriptions_by_key[registered_one_model.key] or "")
    quality = stage.quality
    assert (quality.model, quality.registered, quality.gate) == (one_model, registered_one_model, gate)
    assert quality.model_name("") == "one-model"
    with pytest.raises(ValueError, match="not a metric gate"):
        from mltrain_assets.sdk import ENGINE_PARITY

        model_stage(spec, ENGINE_PARITY, "x")
