"""Every asset in the code location carries what a platform team's catalog needs."""

from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, FreshnessPolicy, MultiPartitionsDefinition, TableSchema

from mltrain_assets.core.assets import LAYERS
from mltrain_assets.definitions import defs
from mltrain_assets.registry import landing_datasets

SPECS = {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_asset_has_owners_tags_kinds_a_description_and_code_references(name):
    spec = SPECS[name]
    assert spec.owners and all(o.startswith("team:") or "@" in o for o in spec.owners), spec.owners
    assert spec.tags.get("pipeline") and spec.tags.get("layer") in LAYERS, spec.tags
    assert spec.kinds, f"{name}: no kinds"
    assert spec.description and len(spec.description) > 20, f"{name}: no description"
    references = spec.metadata.get("dagster/code_references")
    assert references and references.code_references, f"{name}: no code reference"
    file_path = references.code_references[0].file_path
    assert name in Path(file_path).read_text(), f"{name}: its code reference {file_path} does not name it"


@pytest.mark.parametrize("name", sorted(n for n in SPECS if SPECS[n].tags.get("layer") != "report"))
def test_every_pipeline_layer_has_a_freshness_policy(name):
    assert isinstance(SPECS[name].freshness_policy, FreshnessPolicy), name


def test_landed_assets_carry_their_landing_contract_as_column_schema():
    landed = [spec for spec in SPECS.values() if spec.tags.get("layer") == "landed"]
    assert {spec.metadata["landing_dataset"] for spec in landed} == set(landing_datasets())
    for spec in landed:
        schema = spec.metadata["dagster/column_schema"]
        assert isinstance(schema, TableSchema)
        contract = landing_datasets()[spec.metadata["landing_dataset"]].schema
        assert [c.name for c in schema.columns] == contract.names
        id_column = next(c for c in schema.columns if c.name == contract.names[0])
        assert id_column.constraints.nullable is False


def test_code_references_link_to_the_running_commit_when_a_git_url_is_set(monkeypatch):
    from mltrain_assets.core.assets import with_code_references
    from mltrain_assets.pipelines.demand.assets import city_demand_model, ride_events
    from mltrain_assets.resources.tracking import code_commit

    monkeypatch.setenv("MLTRAIN_GIT_URL", "https://github.com/acme/mltrain")
    commit = code_commit().removesuffix("-dirty")
    linked = {a.key.to_user_string(): a for a in with_code_references([city_demand_model, ride_events])}
    url = linked["city_demand_model"].metadata_by_key[city_demand_model.key]["dagster/code_references"]
    assert url.code_references[0].url.startswith(
        f"https://github.com/acme/mltrain/tree/{commit}/mltrain_assets/pipelines/demand/assets.py#L"
    )


def test_every_check_of_a_partitioned_asset_is_partitioned_like_it():
    """Each partition (a date, a date x city) has its own gate result: none hides behind another's."""
    graph = defs.resolve_asset_graph()
    checks = list(graph.asset_check_keys)
    assert checks
    for key in checks:
        asset = graph.get(key.asset_key)
        assert graph.get(key).partitions_def == asset.partitions_def, f"{key.to_user_string()}"
    gates = {key.to_user_string() for key in checks}
    assert {"city_demand_model:mape_below_threshold", "recommender_model:auc_above_threshold"} <= gates


def test_every_date_x_city_asset_with_a_freshness_policy_has_a_check_per_city():
    graph = defs.resolve_asset_graph()
    keyed = [
        name
        for name, spec in SPECS.items()
        if isinstance(spec.partitions_def, MultiPartitionsDefinition) and spec.freshness_policy is not None
    ]
    assert "city_demand_model" in keyed
    for name in keyed:
        check = AssetCheckKey(AssetKey(name), "city_fresh")
        assert check in graph.asset_check_keys, name
        assert not graph.get(check).blocking, "staleness flags a city; it blocks nothing"
