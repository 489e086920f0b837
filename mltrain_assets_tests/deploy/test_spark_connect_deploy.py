"""The Spark Connect server's manifests (deploy/spark-connect/): admitted, restricted, and what the workloads reach."""

from pathlib import Path

import yaml

from mltrain_assets.workloads.common.spark_connect import connect_address
from mltrain_assets_tests.admission import admission_refusals

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "deploy" / "spark-connect" / "spark-connect.yaml"
URL = "sc://mltrain-spark-connect:15002"  # what helm-values/dagster.yaml names as the option


def _objects() -> dict[str, dict]:
    return {obj["kind"]: obj for obj in yaml.safe_load_all(MANIFEST.read_text()) if obj}


def _executor_pod() -> dict:
    return yaml.safe_load(_objects()["ConfigMap"]["data"]["executor.yaml"])


def test_every_object_and_the_executor_template_are_admitted_restricted_with_a_read_only_root():
    for obj in [*_objects().values(), _executor_pod()]:
        assert admission_refusals(obj) == [], obj["kind"]
    for spec in (_objects()["Deployment"]["spec"]["template"]["spec"], _executor_pod()["spec"]):
        assert all(c["securityContext"]["readOnlyRootFilesystem"] for c in spec["containers"])


def test_only_the_server_mounts_a_token_and_its_role_covers_its_executor_pods():
    objects = _objects()
    server = objects["Deployment"]["spec"]["template"]["spec"]
    assert server["automountServiceAccountToken"] is True and server["serviceAccountName"] == "mltrain-spark-connect"
    assert _executor_pod()["spec"]["automountServiceAccountToken"] is False
    assert objects["ServiceAccount"]["automountServiceAccountToken"] is False
    pods = next(r for r in objects["Role"]["rules"] if "pods" in r["resources"])
    assert {"create", "watch", "delete"} <= set(pods["verbs"])


def test_the_service_serves_the_url_the_helm_values_name_and_the_server_binds_that_port():
    host, port = connect_address(URL)
    objects = _objects()
    assert objects["Service"]["metadata"]["name"] == host
    assert objects["Service"]["spec"]["ports"][0]["port"] == port
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert f"spark.connect.grpc.binding.port={port}" in container["args"]
    assert "org.apache.spark.sql.connect.service.SparkConnectServer" in container["args"]
    assert container["startupProbe"]["tcpSocket"]["port"] == "grpc" == container["ports"][0]["name"]
    assert URL in (REPO / "helm-values" / "dagster.yaml").read_text()


def test_the_executor_template_is_the_one_the_workload_pods_spark_is_given():
    """The server's executors run exactly as a Spark workload's executors do: the same pod template code renders both."""
    from mltrain_assets.resources.k8s import PodTemplate, executor_pod_template

    shipped = _executor_pod()
    container = shipped["spec"]["containers"][0]
    rendered = executor_pod_template(
        PodTemplate(
            image=container["image"],
            namespace="mltrain",
            node_selector=shipped["spec"].get("nodeSelector", {}),
            scratch_size=shipped["spec"]["volumes"][0]["emptyDir"]["sizeLimit"],
        )
    )
    ours = rendered["spec"]["containers"][0]
    for field in ("securityContext", "volumeMounts", "workingDir", "image", "name"):
        assert container[field] == ours[field], field
    for field in ("securityContext", "volumes", "automountServiceAccountToken", "restartPolicy", "nodeSelector"):
        assert shipped["spec"][field] == rendered["spec"][field], field
