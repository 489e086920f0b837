"""helm-values/ against the official Dagster chart's values schemas (../shared/helm-schema), and the
dagster.yaml the chart renders from it against Dagster itself.

Our files are overrides on top of the chart's defaults, so the schema's `required` lists are
relaxed; everything we do set must exist in the schema with the right type and shape.

Without ../shared the schema tests skip, unless ``MLTRAIN_REQUIRE_SERVICES=1`` (CI, where it is
provided): then its absence is a failure, not a silent skip. The other tests need only the repo.
"""

import copy
import functools
import importlib.metadata
import json
import os
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dagster import DagsterInstance
from dagster._config import validate_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import PoolGranularity, dagster_instance_config
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT.parent / "shared" / "helm-schema"
VALUES = ROOT / "helm-values" / "dagster.yaml"
K8S = "https://kubernetesjsonschema.dev/v1.18.0/_definitions.json#/definitions/io.k8s.api.core.v1."
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")

# The workload settings issue 8 wires through the code location's environment.
WORKLOAD_SETTINGS = (
    "MLTRAIN_COMPUTE",
    "MLTRAIN_TRAIN_NODES",
    "MLTRAIN_TRAIN_GPUS_PER_NODE",
    "MLTRAIN_SPARK_S3A",
    "MLTRAIN_SPARK_MASTER",
    "MLTRAIN_SPARK_CONF",
    "MLTRAIN_K8S_NAMESPACE",
    "MLTRAIN_WORKLOAD_RESOURCES",
    "MLTRAIN_POOL_LIMITS",
    "MLTRAIN_INIT_POOLS_DAGSTER_HOME",
    "MLTRAIN_K8S_SERVICE_ACCOUNT",
    "MLTRAIN_K8S_ENV_SECRET",
    "MLTRAIN_K8S_NODE_SELECTOR",
    "MLTRAIN_K8S_TRAINING_NODE_SELECTOR",
    "MLTRAIN_K8S_TRAINING_TOLERATIONS",
)


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


def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def deployment(vals: dict) -> dict:
    return vals["dagster-user-deployments"]["deployments"][0]


def deployment_env(vals: dict) -> dict[str, str]:
    # Literal values only: a Secret reference (the alert webhook) has no value here.
    return {e["name"]: e["value"] for e in deployment(vals)["env"] if "value" in e}


def test_absent_schema_fails_where_required_and_skips_otherwise(tmp_path, monkeypatch):
    monkeypatch.setenv("MLTRAIN_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="MLTRAIN_REQUIRE_SERVICES=1 requires it"):
        _chart_schema(tmp_path)
    monkeypatch.delenv("MLTRAIN_REQUIRE_SERVICES")
    with pytest.raises(pytest.skip.Exception, match="not present"):
        _chart_schema(tmp_path)


def _validate(instance, schema) -> None:
    registry = Registry(retrieve=_kubernetes_definitions)
    jsonschema.Draft7Validator(schema, registry=registry).validate(instance)


def _validate_k8s(instance, kind: str) -> None:
    """Validate against one Kubernetes API type (relaxed `required`: these are partial specs the
    chart or dagster-k8s completes)."""
    resource = _kubernetes_definitions(K8S.split("#")[0])
    definitions = _without_required(resource.contents["definitions"])
    schema = {"definitions": definitions, "$ref": f"#/definitions/io.k8s.api.core.v1.{kind}"}
    jsonschema.Draft7Validator(schema).validate(instance)


def test_values_match_the_chart_schema():
    _validate(values(), chart_schema())


def test_schema_rejects_what_the_chart_would_not_accept():
    schema = chart_schema()
    vals = values()
    broken = copy.deepcopy(vals)
    broken["dagsterDaemon"]["runCoordinator"]["type"] = "NotACoordinator"
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken, schema)
    misspelt = copy.deepcopy(vals)
    misspelt["runLauncher"]["config"]["k8sRunLauncher"]["resourcez"] = {}
    with pytest.raises(jsonschema.ValidationError):
        _validate(misspelt, schema)
    writable = copy.deepcopy(vals)
    writable["dagsterWebserver"]["securityContext"]["readOnlyRootFilesystem"] = "no"
    with pytest.raises(jsonschema.ValidationError):
        _validate(writable, schema)


def test_user_deployment_runs_this_code_location():
    vals = values()
    assert deployment(vals)["dagsterApiGrpcArgs"] == ["--module-name", "mltrain_assets.definitions"]
    env = deployment_env(vals)
    assert env["MLTRAIN_COMPUTE"] == "k8s" and env["MLTRAIN_STORAGE_URI"].startswith("s3://")


def test_every_workload_setting_is_set_explicitly():
    """The issue's settings, and every EnvVar the code location's resources read, are in the
    deployment's env: nothing falls back to a laptop default in production."""
    env = deployment_env(values())
    read_by_code = set(
        re.findall(r'EnvVar\("([A-Z0-9_]+)"\)', (ROOT / "mltrain_assets" / "definitions.py").read_text())
    )
    assert read_by_code, "definitions.py reads no EnvVar?"
    missing = (set(WORKLOAD_SETTINGS) | read_by_code) - set(env)
    assert not missing, f"not set in helm-values: {sorted(missing)}"
    assert env["MLTRAIN_TRAIN_NODES"] == "8" and env["MLTRAIN_TRAIN_GPUS_PER_NODE"] == "8"
    assert env["MLTRAIN_SPARK_S3A"] == "true"
    assert env["MLTRAIN_SPARK_MASTER"].startswith("k8s://https://")
    assert env["MLTRAIN_K8S_NAMESPACE"] and env["MLTRAIN_K8S_SERVICE_ACCOUNT"] and env["MLTRAIN_K8S_ENV_SECRET"]
    assert env["MLTRAIN_HOME"].startswith("/tmp/")  # the only writable path in the pods


def test_the_deployment_env_passes_the_production_settings_check():
    """What the code location loads with: the chart's env plus DAGSTER_CURRENT_IMAGE, which the chart sets."""
    from mltrain_assets.settings import validate_settings

    env = deployment_env(values())
    validate_settings({**env, "DAGSTER_CURRENT_IMAGE": "registry.example.com/mltrain:0.1.0@sha256:" + "0" * 64})
    # A run pod the K8sRunLauncher starts has DAGSTER_RUN_JOB_NAME instead: its image is the run's.
    validate_settings({**env, "DAGSTER_RUN_JOB_NAME": "demand_forecasting"})


def test_workload_resources_and_pool_limits_are_usable():
    from mltrain_assets.instance.pools import configured_pool_limits
    from mltrain_assets.launch.workload_resources import parse_overrides, resolve

    env = deployment_env(values())
    steps = {"city_demand_model", "recommender_model"}
    overrides = parse_overrides(env["MLTRAIN_WORKLOAD_RESOURCES"], steps)
    training = resolve("training", "recommender_model", overrides)
    assert training.memory == "1000Gi" and training.shm == "128Gi"  # /dev/shm fits inside the memory limit
    assert configured_pool_limits(env) == {"registry": 1}
    # The code location starts with `mltrain init --pools` against the chart's instance, mounted here.
    dep = deployment(values())
    mounts = {m["mountPath"]: m for m in dep["volumeMounts"]}
    mount = mounts[env["MLTRAIN_INIT_POOLS_DAGSTER_HOME"]]
    assert mount["readOnly"] is True
    volume = next(v for v in dep["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "dagster-instance"


def test_json_settings_are_valid():
    env = deployment_env(values())
    conf = json.loads(env["MLTRAIN_SPARK_CONF"])
    assert isinstance(conf, dict) and conf and all(k.startswith("spark.") for k in conf), conf
    assert all(isinstance(v, str) for v in conf.values()), "Spark conf values are strings"
    assert "spark.jars.packages" not in conf  # the image ships the jars; nothing downloads at run time
    for name in ("MLTRAIN_K8S_NODE_SELECTOR", "MLTRAIN_K8S_TRAINING_NODE_SELECTOR"):
        selector = json.loads(env[name])
        assert isinstance(selector, dict) and all(isinstance(v, str) for v in selector.values()), name
    # The GPU request alone places training (a label like nvidia.com/gpu.present is not on every GPU pool).
    assert json.loads(env["MLTRAIN_K8S_TRAINING_NODE_SELECTOR"]) == {}
    tolerations = json.loads(env["MLTRAIN_K8S_TRAINING_TOLERATIONS"])
    assert tolerations and isinstance(tolerations, list)
    for toleration in tolerations:
        _validate_k8s(toleration, "Toleration")


def test_images_are_pinned_by_digest():
    vals = values()
    image = deployment(vals)["image"]
    assert DIGEST.search(str(image["tag"])), f"the code location image is not a digest: {image}"
    digest = str(image["tag"]).split("@", 1)[1]
    reference = f"{image['repository']}@{digest}"
    env = deployment_env(vals)
    # Workload pods and Spark executors run the run's own image (the code location's): the digest is
    # written once, in the chart's image, and nowhere else in the values.
    assert reference.startswith("registry.example.com/mltrain@sha256:")
    assert "MLTRAIN_K8S_IMAGE" not in env
    assert "spark.kubernetes.container.image" not in json.loads(env["MLTRAIN_SPARK_CONF"])
    assert len(re.findall(r"sha256:[0-9a-f]{64}", VALUES.read_text())) == 1
    # The chart's own images: the Dagster release this project pins.
    dagster_version = importlib.metadata.version("dagster")
    for component in ("dagsterWebserver", "dagsterDaemon"):
        assert vals[component]["image"]["tag"] == dagster_version, component


def _security_contexts(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else key
            if key in ("securityContext", "podSecurityContext") and isinstance(value, dict):
                yield here, key, value
            yield from _security_contexts(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _security_contexts(value, f"{path}[{i}]")


def _pods(vals: dict) -> dict[str, dict]:
    """Every pod the chart creates, with where its pod and container settings live."""
    launcher = vals["runLauncher"]["config"]["k8sRunLauncher"]
    run_pod = launcher["runK8sConfig"]["podSpecConfig"]
    return {
        "code location": {**deployment(vals)},
        "webserver": vals["dagsterWebserver"],
        "daemon": vals["dagsterDaemon"],
        "run pods": {
            "podSecurityContext": run_pod["securityContext"],
            "securityContext": launcher["securityContext"],
            "volumes": launcher["volumes"],
            "volumeMounts": launcher["volumeMounts"],
            "resources": launcher["resources"],
        },
    }


def test_every_security_context_is_locked_down():
    found = list(_security_contexts(values()))
    assert len(found) >= 8
    for where, key, context in found:
        pod_level = key == "podSecurityContext" or where.endswith("podSpecConfig.securityContext")
        assert context.get("runAsNonRoot") is True, where
        assert context.get("runAsUser", 0) != 0, where  # the chart's init-container images default to root
        if pod_level:
            _validate_k8s(context, "PodSecurityContext")
            assert context.get("seccompProfile") == {"type": "RuntimeDefault"}, where
        else:
            _validate_k8s(context, "SecurityContext")
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("privileged", False) is False, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where


def test_every_pod_the_chart_creates_is_locked_down_with_a_writable_tmp():
    for pod, spec in _pods(values()).items():
        assert spec.get("podSecurityContext", {}).get("runAsNonRoot") is True, pod
        assert spec.get("securityContext", {}).get("readOnlyRootFilesystem") is True, pod
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        mounts = {m["mountPath"]: m["name"] for m in spec.get("volumeMounts") or []}
        assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]], f"{pod}: no writable /tmp"
        resources = spec.get("resources", {})
        assert resources.get("requests", {}).get("cpu") and resources.get("limits", {}).get("memory"), pod
        # GPUs belong to training workloads only: no control-plane pod tolerates the GPU taint.
        assert not spec.get("tolerations"), pod


def test_run_pod_config_is_valid_kubernetes():
    run_config = values()["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    _validate_k8s(run_config["podSpecConfig"], "PodSpec")
    _validate_k8s(run_config["containerConfig"], "Container")


# The dagster.yaml the chart renders, for the parts these values set. A transcription of the
# chart's templates at the schema's version (helm/dagster/templates/configmap-instance.yaml and
# helpers/instance/_run-coordinator.tpl, _compute-log-manager.tpl in dagster-io/dagster; the
# runCoordinator part renders `max_concurrent_runs: -1` as soon as any queuedRunCoordinator key
# keeps a value). Helm drops keys set to null, which removes the chart's defaults for them.
def _camel_to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def render_instance(vals: dict) -> dict:
    rendered: dict = {}
    daemon = vals["dagsterDaemon"]
    coordinator = daemon["runCoordinator"]
    if daemon["enabled"] and coordinator["enabled"]:
        assert coordinator["type"] == "QueuedRunCoordinator"
        queued = {k: v for k, v in coordinator["config"]["queuedRunCoordinator"].items() if v is not None}
        rendered["run_coordinator"] = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"}
        if any(queued.values()):
            config = {"max_concurrent_runs": queued.get("maxConcurrentRuns", -1)}
            config.update({_camel_to_snake(k): v for k, v in queued.items() if k != "maxConcurrentRuns" and v})
            rendered["run_coordinator"]["config"] = config
    logs = vals["computeLogManager"]
    assert logs["type"] == "S3ComputeLogManager"
    rendered["compute_logs"] = {
        "module": "dagster_aws.s3.compute_log_manager",
        "class": "S3ComputeLogManager",
        "config": {_camel_to_snake(k): v for k, v in logs["config"]["s3ComputeLogManager"].items()},
    }
    monitoring = daemon["runMonitoring"]
    if monitoring["enabled"]:
        rendered["run_monitoring"] = {_camel_to_snake(k): v for k, v in monitoring.items()}
    retries = daemon["runRetries"]
    if retries["enabled"]:
        rendered["run_retries"] = {"enabled": True, "max_retries": retries["maxRetries"]}
    rendered["telemetry"] = {"enabled": vals["telemetry"]["enabled"]}
    rendered.update(copy.deepcopy(vals.get("additionalInstanceConfig") or {}))
    return rendered


def _write_instance(tmp_path: Path, rendered: dict) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    # Storage is PostgreSQL in the chart; SQLite here, which changes nothing about concurrency.
    config = {**rendered, "storage": {"sqlite": {"base_dir": str(home)}}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def test_no_chart_default_survives_in_the_run_coordinator():
    """Every queuedRunCoordinator key the chart knows is nulled here, so none of its defaults makes
    the chart render run_coordinator.config (which Dagster refuses next to `concurrency`)."""
    known = set(chart_schema()["definitions"]["QueuedRunCoordinatorConfig"]["properties"])
    queued = values()["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert set(queued) == known and all(v is None for v in queued.values()), queued


def test_rendered_instance_is_accepted_by_dagster_and_limits_pools(tmp_path):
    rendered = render_instance(values())
    assert "config" not in rendered["run_coordinator"]
    home = _write_instance(tmp_path, rendered)
    dagster_instance_config(str(home))  # Dagster's own validation, concurrency rules included
    instance = DagsterInstance.from_config(str(home))
    try:
        config = instance.get_concurrency_config()
        assert config.pool_config.default_pool_limit == 4
        assert config.pool_config.pool_granularity == PoolGranularity.OP
        assert config.run_queue_config.max_concurrent_runs == 20
        assert not config.run_queue_config.tag_concurrency_limits
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
        assert type(instance.compute_log_manager).__name__ == "S3ComputeLogManager"
    finally:
        instance.dispose()


def test_run_limits_in_the_run_coordinator_are_refused_next_to_pools(tmp_path):
    """What the previous values did (a training tag limit in queuedRunCoordinator beside
    additionalInstanceConfig.concurrency): the daemon and webserver would refuse to start."""
    vals = values()
    vals["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"] = [
        {"key": "mltrain/workload", "value": "training", "limit": 4}
    ]
    home = _write_instance(tmp_path, render_instance(vals))
    with pytest.raises(DagsterInvalidConfigError, match="incompatible with the `concurrency > runs` config"):
        dagster_instance_config(str(home))


def test_compute_logs_ship_to_s3():
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager

    rendered = render_instance(values())["compute_logs"]["config"]
    result = validate_config(S3ComputeLogManager.config_type(), rendered)
    assert result.success, result.errors
    assert rendered["bucket"] and rendered["prefix"]
    assert rendered["local_dir"].startswith("/tmp/")  # staged on the writable emptyDir
    manager = S3ComputeLogManager(**result.value)
    assert manager._s3_bucket == rendered["bucket"]


def test_rbac_the_chart_lacks_is_valid_and_covers_what_the_backends_submit():
    import kubernetes_validate
    import yaml

    documents = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "rbac.yaml").read_text()))
    for document in documents:
        kubernetes_validate.validate(document, "1.30", strict=True)
    roles = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Role"}
    control = {
        (g, r)
        for rule in roles["mltrain-control-plane-workloads"]["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert {("", "pods"), ("", "services"), ("", "pods/log"), ("batch", "jobs")} <= control
    spark = {r for rule in roles["mltrain-spark-driver"]["rules"] for r in rule["resources"]}
    assert {"pods", "services", "configmaps"} <= spark
