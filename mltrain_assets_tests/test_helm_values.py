"""helm-values/ against the official Dagster chart's values schemas (../shared/helm-schema).

Our files are overrides on top of the chart's defaults, so the schema's `required` lists are
relaxed; everything we do set must exist in the schema with the right type and shape.

Without ../shared the schema tests skip, unless ``MLTRAIN_REQUIRE_SERVICES=1`` (CI, where it is
provided): then its absence is a failure, not a silent skip.
"""

import copy
import functools
import json
import os
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


def _chart_schema(schemas: Path) -> dict:
    path = schemas / "dagster-values.schema.json"
    if not path.exists():
        message = f"{path} not present (../shared is absent)"
        if os.environ.get("MLTRAIN_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{message}; MLTRAIN_REQUIRE_SERVICES=1 requires it")
        pytest.skip(message)
    return _without_required(json.loads(path.read_text()))


@functools.cache
def chart_schema() -> dict:
    """Loaded in the test body, so a required schema that is absent is a test failure, not a setup error."""
    return _chart_schema(SCHEMAS)


def test_absent_schema_fails_where_required_and_skips_otherwise(tmp_path, monkeypatch):
    monkeypatch.setenv("MLTRAIN_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="MLTRAIN_REQUIRE_SERVICES=1 requires it"):
        _chart_schema(tmp_path)
    monkeypatch.delenv("MLTRAIN_REQUIRE_SERVICES")
    with pytest.raises(pytest.skip.Exception, match="not present"):
        _chart_schema(tmp_path)


def _validate(values, schema) -> None:
    registry = Registry(retrieve=_kubernetes_definitions)
    jsonschema.Draft7Validator(schema, registry=registry).validate(values)


def test_values_match_the_chart_schema():
    schema = chart_schema()
    values = yaml.safe_load((ROOT / "helm-values" / "dagster.yaml").read_text())
    _validate(values, schema)


def test_schema_rejects_what_the_chart_would_not_accept():
    schema = chart_schema()
    values = yaml.safe_load((ROOT / "helm-values" / "dagster.yaml").read_text())
    broken = copy.deepcopy(values)
    broken["dagsterDaemon"]["runCoordinator"]["type"] = "NotACoordinator"
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken, schema)
    misspelt = copy.deepcopy(values)
    misspelt["runLauncher"]["config"]["k8sRunLauncher"]["resourcez"] = {}
    with pytest.raises(jsonschema.ValidationError):
        _validate(misspelt, schema)


def test_user_deployment_runs_this_code_location():
    values = yaml.safe_load((ROOT / "helm-values" / "dagster.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "mltrain_assets.definitions"]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["MLTRAIN_COMPUTE"] == "k8s" and env["MLTRAIN_STORAGE_URI"].startswith("s3://")
    limits = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    assert {"key": "mltrain/workload", "value": "training", "limit": 4} in limits
