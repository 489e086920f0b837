"""``mltrain manifests``: the exact objects the k8s backend would submit, for every asset that launches work."""

import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from mltrain_assets.launch.local import command_params
from mltrain_assets.launch.workload_resources import resolve
from mltrain_assets.resources.pod_security import violations
from mltrain_assets_tests.cli.conftest import CITY, DATE

REPO = Path(__file__).resolve().parents[2]

# Asset -> the workload module its launch runs.
LAUNCHES = {
    "ride_events": "mltrain_assets.workloads.ingest.workload",
    "city_hour_aggregates": "mltrain_assets.pipelines.demand.workloads.aggregates",
    "city_demand_features": "mltrain_assets.pipelines.demand.workloads.features",
    "city_demand_model": "mltrain_assets.pipelines.demand.workloads.train",
    "demand_forecasts": "mltrain_assets.pipelines.demand.workloads.forecast",
    "user_interactions": "mltrain_assets.workloads.ingest.workload",
    "interaction_embeddings": "mltrain_assets.pipelines.recsys.workloads.embeddings",
    "recommender_model": "mltrain_assets.pipelines.recsys.workloads.train.launcher",
    "recommendations": "mltrain_assets.pipelines.recsys.workloads.recommend",
}

# What these steps' workloads declare beyond their profile (``@workload(resources=...)``), as figures.
DECLARED = {
    "city_demand_model": {"memory": "16Gi", "shm": "", "timeout_s": 1800},  # LightGBM per city, not the GPU trainer
    "demand_forecasts": {"timeout_s": 900},
}


@pytest.mark.parametrize("asset", sorted(LAUNCHES))
def test_every_launching_asset_renders_valid_objects_running_its_workload(upstream, asset):
    from mltrain_assets.cli import manifests

    partition = f"{CITY}|{DATE}" if asset in ("city_demand_model", "demand_forecasts") else DATE
    store = Path(upstream.removeprefix("file://"))
    before = sorted(store.rglob("*"))
    objects = manifests.render(asset, partition)
    assert sorted(store.rglob("*")) == before, "rendering launches nothing and commits nothing"
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30", strict=True)
        assert violations(obj) == [], "Pod Security restricted + read-only root"
    (pod,) = objects
    container = pod["spec"]["containers"][0]
    assert container["args"][:3] == ["python", "-m", LAUNCHES[asset]]
    params = command_params(container["args"])
    assert params.get("out_uri", "").startswith(upstream) or params.get("targets")
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # Resources are the profile's, refined by what the workload declares: the header says them, the pod requests them.
    resources = resolve(pod["metadata"]["labels"]["mltrain/profile"], asset, declared=DECLARED.get(asset))
    assert container["resources"]["requests"] == {
        "cpu": resources.cpu,
        "memory": resources.memory,
        "ephemeral-storage": resources.ephemeral_storage,
    }
    assert pod["spec"]["activeDeadlineSeconds"] == resources.timeout_s
    # Secrets travel as references only: no credential value is ever rendered.
    assert not any("SECRET" in e["name"] or "PASSWORD" in e["name"] for e in container.get("env", []))


def test_cli_prints_the_indexed_job_for_eight_gpu_nodes(upstream):
    env = {
        **os.environ,
        "MLTRAIN_TRAIN_NODES": "8",
        "MLTRAIN_TRAIN_GPUS_PER_NODE": "8",
        "MLTRAIN_K8S_ENV_SECRET": "aws",
        # Credentials on the rendering machine must never reach a manifest.
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEYID0000",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-example-secret-value",
        "MLTRAIN_PG_PASSWORD": "pg-example-password",
    }
    result = subprocess.run(
        [sys.executable, "-m", "mltrain_assets.cli", "manifests", "--asset", "recommender_model", "--partition", DATE],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for secret in ("AKIAEXAMPLEKEYID0000", "wJalrXUtnFEMI-example-secret-value", "pg-example-password"):
        assert secret not in result.stdout
    header = result.stdout.splitlines()[0]
    assert header.startswith("# recommender_model: profile training: cpu 8, memory 64Gi, 8 GPU, ephemeral-storage")
    assert "/dev/shm 16Gi" in header and "timeout 3600s" in header
    service, job = yaml.safe_load_all(result.stdout)
    for obj in (service, job):
        kubernetes_validate.validate(obj, "1.30", strict=True)
        assert violations(obj) == []
    assert (service["kind"], service["spec"]["clusterIP"]) == ("Service", "None")
    assert (job["kind"], job["spec"]["completionMode"], job["spec"]["completions"]) == ("Job", "Indexed", 8)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert container["envFrom"] == [{"secretRef": {"name": "aws"}}]
    # Each node binds its rendezvous to its own pod IP (the pod network), never to every interface.
    assert {"name": "MLTRAIN_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in container["env"]
    # Its workers' threads follow its CPU request (8), not the cores of whatever node it lands on.
    assert {
        "name": "MLTRAIN_NODE_CPUS",
        "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1"}},
    } in container["env"]
    params = command_params(container["args"])
    assert (params["backend"], params["device"], params["nnodes"], params["nproc_per_node"]) == ("nccl", "cuda", 8, 8)
    name = job["metadata"]["name"]
    assert params["rdzv_endpoint"] == f"{name}-0.{name}:29400" and params["node_rank"] == -1
    # GPU pods: NCCL's memory-backed /dev/shm, bounded scratch, node-local disk requested.
    pod = job["spec"]["template"]["spec"]
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]
    assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert {"name": "scratch", "emptyDir": {"sizeLimit": "32Gi"}} in pod["volumes"]
    assert container["resources"]["requests"]["ephemeral-storage"] == "40Gi"


def test_resources_come_from_settings(upstream, monkeypatch):
    from mltrain_assets.cli import manifests

    monkeypatch.setenv("MLTRAIN_TRAIN_NODES", "8")
    monkeypatch.setenv("MLTRAIN_TRAIN_GPUS_PER_NODE", "8")
    monkeypatch.setenv(
        "MLTRAIN_WORKLOAD_RESOURCES",
        '{"training": {"cpu": "48", "memory": "900Gi"}, "recommender_model": {"shm": "128Gi", "timeout_s": 14400}}',
    )
    _, job = manifests.render("recommender_model", DATE)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["requests"]["cpu"] == "48"
    assert container["resources"]["limits"] == {"memory": "900Gi", "nvidia.com/gpu": "8"}
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "128Gi"}} in pod["volumes"]
    assert job["spec"]["activeDeadlineSeconds"] == pod["activeDeadlineSeconds"] == 14400


def test_spark_on_kubernetes_renders_the_driver_and_its_executor_template(upstream, monkeypatch):
    """city_demand_features with a k8s:// master: the driver pod names itself to Spark (executors are owned by
    it and die with it), and executors are built on a template with the workload pods' identity and rules."""
    from mltrain_assets.cli import manifests

    monkeypatch.setenv("MLTRAIN_SPARK_MASTER", "k8s://https://kubernetes.default.svc:443")
    monkeypatch.setenv("MLTRAIN_K8S_IMAGE", "registry.example.com/mltrain@sha256:" + "a" * 64)
    monkeypatch.setenv("MLTRAIN_K8S_SERVICE_ACCOUNT", "mltrain-workloads")
    monkeypatch.setenv("MLTRAIN_K8S_ENV_SECRET", "mltrain-aws")
    monkeypatch.setenv("MLTRAIN_K8S_NODE_SELECTOR", '{"kubernetes.io/arch": "amd64"}')
    objects = manifests.render("city_demand_features", DATE)
    manifests.validate(objects)  # schema + restricted, as the CLI does before printing
    driver, executor = objects
    assert (driver["kind"], executor["kind"]) == ("Pod", "PodTemplate")
    container = driver["spec"]["containers"][0]
    from_pod = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e}
    assert from_pod == {"SPARK_DRIVER_HOST": "status.podIP", "SPARK_DRIVER_POD_NAME": "metadata.name"}
    spark = command_params(container["args"])["spark"]
    image = "registry.example.com/mltrain@sha256:" + "a" * 64
    assert spark["conf"]["spark.kubernetes.container.image"] == container["image"] == image
    assert spark["conf"]["spark.kubernetes.authenticate.executor.serviceAccountName"] == "mltrain-workloads"
    # The template the driver hands Spark is the one shown, and it carries the workload pods' rules.
    assert spark["executor_pod_template"]["spec"] == executor["template"]["spec"]
    spec = executor["template"]["spec"]
    (exec_container,) = spec["containers"]
    assert exec_container["name"] == "spark-executor"
    assert spec["serviceAccountName"] == "mltrain-workloads" and spec["automountServiceAccountToken"] is False
    assert spec["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
    assert exec_container["envFrom"] == [{"secretRef": {"name": "mltrain-aws"}}]
    assert exec_container["securityContext"] == container["securityContext"]
    assert spec["securityContext"] == driver["spec"]["securityContext"]
    # Its bounded scratch is the volume Spark would otherwise add for SPARK_LOCAL_DIRS (so /tmp is mounted once),
    # and the executor's working directory (the image's WORKDIR is on the read-only root).
    assert {"name": "spark-local-dir-1", "emptyDir": {"sizeLimit": "32Gi"}} in spec["volumes"]
    assert exec_container["volumeMounts"][0] == {"name": "spark-local-dir-1", "mountPath": "/tmp"}
    assert exec_container["workingDir"] == "/tmp"


def test_the_driver_hands_spark_its_pod_name_and_the_executor_template(tmp_path, monkeypatch):
    from mltrain_assets.workloads.common.spark import SparkSettings, kubernetes_conf

    template = {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "spark-executor"}]}}
    monkeypatch.setenv("SPARK_DRIVER_POD_NAME", "mltrain-city-demand-features-abc")
    conf = kubernetes_conf(SparkSettings(master="k8s://https://k:443", executor_pod_template=template), tmp_path)
    assert conf["spark.kubernetes.driver.pod.name"] == "mltrain-city-demand-features-abc"
    assert conf["spark.kubernetes.executor.podTemplateContainerName"] == "spark-executor"
    assert yaml.safe_load(Path(conf["spark.kubernetes.executor.podTemplateFile"]).read_text()) == template
    assert kubernetes_conf(SparkSettings(master="local[2]", executor_pod_template=template), tmp_path) == {}


def test_unknown_asset_is_named(upstream):
    from mltrain_assets.cli import manifests
    from mltrain_assets.cli.errors import UsageError

    with pytest.raises(UsageError, match="unknown asset 'nope'"):
        manifests.render("nope", DATE)
