"""helm-values/ against the official Dagster chart's values schemas (../shared/helm-schema).

Our files are overrides on top of the chart's defaults, so the schema's `required` lists are
relaxed; everything we do set must exist in the schema with the right type and shape.
"""

import copy
import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT.parent / "shared" / "helm-schema"


def _without_required(schema):
    if isinstance(schema, dict):
        return {k: _without_required(v) for k, v in schema.items() if k != "required"}
    if isinstance(schema, list):
        return [_without_required(v) for v in schema]
    return schema


def _kubernetes_definitions(uri: str) -> Resource:
    """The chart points at kubernetesjsonschema.dev; serve the copy kubernetes-validate ships (no network)."""
    bundled = (
        Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / "v1.29.0-local" / "_definitions.json"
    )
    if not uri.startswith("https://kubernetesjsonschema.dev/") or not uri.endswith("/_definitions.json"):
        raise LookupError(f"unexpected remote schema {uri}")
    # The bundled copy is draft 2020-12 ("$defs"); the chart addresses "definitions" (draft 7).
    text = bundled.read_text().replace('"#/$defs/', '"#/definitions/')
    contents = json.loads(text)
    return Resource.from_contents({"definitions": contents["$defs"]}, default_specification=DRAFT7)


@pytest.fixture(scope="module")
def chart_schema():
    path = SCHEMAS / "dagster-values.schema.json"
    if not path.exists():
        pytest.skip(f"{path} not present (../shared is absent)")
    return _without_required(json.loads(path.read_text()))


def _validate(values, schema) -> None:
    registry = Registry(retrieve=_kubernetes_definitions)
    jsonschema.Draft7Validator(schema, registry=registry).validate(values)


def test_values_match_the_chart_schema(chart_schema):
    values = yaml.safe_load((ROOT / "helm-values" / "dagster.yaml").read_text())
    _validate(values, chart_schema)


def test_schema_rejects_what_the_chart_would_not_accept(chart_schema):
    values = yaml.safe_load((ROOT / "helm-values" / "dagster.yaml").read_text())
    broken = copy.deepcopy(values)
    broken["dagsterDaemon"]["runCoordinator"]["type"] = "NotACoordinator"
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken, chart_schema)
    misspelt = copy.deepcopy(values)
    misspelt["runLauncher"]["config"]["k8sRunLauncher"]["resourcez"] = {}
    with pytest.raises(jsonschema.ValidationError):
        _validate(misspelt, chart_schema)


def test_user_deployment_runs_this_code_location(chart_schema):
    values = yaml.safe_load((ROOT / "helm-values" / "dagster.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "mltrain_assets.definitions"]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["MLTRAIN_COMPUTE"] == "k8s" and env["MLTRAIN_STORAGE_URI"].startswith("s3://")
    limits = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    assert {"key": "mltrain/workload", "value": "training", "limit": 4} in limits
