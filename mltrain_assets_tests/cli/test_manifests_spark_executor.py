"""The executor pod Spark itself builds from the template ``city_demand_features`` renders, checked as an API server would.

Not our template: Spark 4.3's ``KubernetesExecutorBuilder`` (through the pyspark JVM gateway) merges it with its
own feature steps, in a JVM whose environment is the image's (the Dockerfile's ``ENV``) plus the driver pod's, and
with the conf the driver workload hands Spark (``kubernetes_conf``, from the rendered driver pod's params). What
comes out is what the API server would receive when the driver asks for an executor.
"""

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
from pathlib import Path

import pyspark
import pytest

from mltrain_assets.launch.local import command_params
from mltrain_assets.workloads.common.spark import SparkSettings, kubernetes_conf
from mltrain_assets_tests.admission import admission_refusals, pod_spec_refusals, unwritable_working_dirs
from mltrain_assets_tests.cli.conftest import DATE

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "deploy" / "docker" / "entrypoint.sh"
MASTER = "k8s://https://kubernetes.default.svc:443"
IMAGE = "registry.example.com/mltrain@sha256:" + "a" * 64
APP_ID = "spark-5f3c9b2a41d84e0c9a7e6b1d2c3f4a5b"
# Where this machine's Java and pyspark are: the image's own paths (SPARK_HOME, JAVA_HOME) do not exist here.
HOST_PATHS = {"SPARK_HOME", "JAVA_HOME", "PATH"}


def image_env() -> dict[str, str]:
    """The image's environment: every ``ENV`` of the Dockerfile, ``${ARG}`` resolved to the ARG's default."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    args, env = {}, {}
    for line in text.splitlines():
        keyword, _, rest = line.strip().partition(" ")
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name.strip()] = value.strip()
        elif keyword == "ENV":
            for item in shlex.split(rest):
                name, value = item.split("=", 1)
                env[name] = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], ""), value)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def rendered(upstream, monkeypatch):
    """The driver Pod and the executor PodTemplate ``mltrain manifests`` renders for city_demand_features on k8s://."""
    from mltrain_assets.cli import manifests

    monkeypatch.setenv("MLTRAIN_SPARK_MASTER", MASTER)
    monkeypatch.setenv("MLTRAIN_K8S_IMAGE", IMAGE)
    monkeypatch.setenv("MLTRAIN_K8S_SERVICE_ACCOUNT", "mltrain-spark-driver")
    monkeypatch.setenv("MLTRAIN_K8S_ENV_SECRET", "mltrain-aws")
    driver, executor = manifests.render("city_demand_features", DATE)
    assert (driver["kind"], executor["kind"]) == ("Pod", "PodTemplate")
    return driver, executor


def build_executor_pod(driver: dict, tmp_path: Path, monkeypatch, driver_port: int) -> dict:
    """Executor 1 of the driver's application, as Spark's ExecutorPodsAllocator would create it."""
    from pyspark.java_gateway import launch_gateway

    container = driver["spec"]["containers"][0]
    spark = command_params(container["args"])["spark"]
    settings = SparkSettings(
        master=spark["master"], conf=spark["conf"], executor_pod_template=spark["executor_pod_template"]
    )
    # The driver's JVM environment: the image's, then the pod's literal env (the downward API ones are per pod).
    pod_env = {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
    for name, value in {**image_env(), **pod_env}.items():
        if name not in HOST_PATHS:
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("SPARK_DRIVER_POD_NAME", driver["metadata"]["name"])
    conf = {
        **kubernetes_conf(settings, scratch=tmp_path),  # as the driver workload does: pod name, template file
        **settings.conf,
        "spark.master": settings.master,
        "spark.app.id": APP_ID,
        "spark.driver.host": "127.0.0.1",
        "spark.driver.port": str(driver_port),
    }
    gateway = launch_gateway()
    try:
        jvm = gateway.jvm
        spark_conf = jvm.org.apache.spark.SparkConf(False)
        for key, value in conf.items():
            spark_conf.set(key, value)
        none = jvm.scala.Option.empty()
        executor_conf = jvm.org.apache.spark.deploy.k8s.KubernetesConf.createExecutorConf(
            spark_conf, "1", APP_ID, none, 0
        )
        security = getattr(jvm.org.apache.spark, "SecurityManager$").__getattr__("MODULE$")
        manager = jvm.org.apache.spark.SecurityManager(
            spark_conf, none, security.__getattr__("$lessinit$greater$default$3")()
        )
        profiles = getattr(jvm.org.apache.spark.resource, "ResourceProfile$").__getattr__("MODULE$")
        client = jvm.io.fabric8.kubernetes.client.KubernetesClientBuilder().build()  # only parses the template
        built = jvm.org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBuilder().buildFromFeatures(
            executor_conf, manager, client, profiles.getOrCreateDefaultProfile(spark_conf)
        )
        # ExecutorPodsAllocator: the container is attached to the pod, then the pod is created as is.
        containers = gateway.new_array(jvm.io.fabric8.kubernetes.api.model.Container, 1)
        containers[0] = built.pod().container()
        model = jvm.io.fabric8.kubernetes.api.model
        pod = model.PodBuilder(built.pod().pod()).editOrNewSpec().addToContainers(containers).endSpec().build()
        text = jvm.io.fabric8.kubernetes.client.utils.Serialization.asJson(pod)
        client.close()
    finally:
        gateway.shutdown()
        gateway.proc.kill()
        gateway.proc.wait()
    return json.loads(text)


@pytest.fixture
def executor_pod(rendered, tmp_path, monkeypatch):
    driver_port = free_port()
    return build_executor_pod(rendered[0], tmp_path, monkeypatch, driver_port), driver_port


def test_the_executor_pod_spark_builds_is_admitted(executor_pod):
    pod, _ = executor_pod
    assert admission_refusals(pod) == []
    assert unwritable_working_dirs(pod["spec"]) == []
    spec = pod["spec"]
    (container,) = spec["containers"]
    # /tmp mounted once, on the template's bounded scratch (Spark reused it for SPARK_LOCAL_DIRS).
    tmp_mounts = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp_mounts == [{"name": "spark-local-dir-1", "mountPath": "/tmp"}]
    local_dir = next(v for v in spec["volumes"] if v["name"] == "spark-local-dir-1")
    assert local_dir["emptyDir"].get("sizeLimit"), local_dir
    assert {"name": "SPARK_LOCAL_DIRS", "value": "/tmp"} in container["env"]
    # The image's entry point runs Spark's `executor`; no service-account token reaches an executor.
    assert "command" not in container and container["args"] == ["executor"]
    assert spec["automountServiceAccountToken"] is False
    assert container["image"] == IMAGE
    assert pod["metadata"]["labels"]["spark-role"] == "executor"


def test_the_checks_refuse_the_pod_spark_builds_from_a_template_mounting_tmp_under_another_name(
    rendered, tmp_path, monkeypatch
):
    """The defect class these checks exist for: a template scratch volume by another name at SPARK_LOCAL_DIRS."""
    driver, _ = rendered
    container = driver["spec"]["containers"][0]
    params = command_params(container["args"])
    template = params["spark"]["executor_pod_template"]
    for item in [*template["spec"]["volumes"], *template["spec"]["containers"][0]["volumeMounts"]]:
        if item["name"] == "spark-local-dir-1":
            item["name"] = "scratch"
    container["args"][container["args"].index("--params") + 1] = json.dumps(params)
    pod = build_executor_pod(driver, tmp_path, monkeypatch, free_port())
    refusals = pod_spec_refusals(pod["spec"])
    assert refusals == [
        "spec.containers[spark-executor].volumeMounts.mountPath: Invalid value: '/tmp': must be unique"
    ], refusals
    assert any("must be unique" in r for r in admission_refusals(pod))


def test_the_built_executor_pod_reaches_the_executor_backend_through_the_image_entry_point(executor_pod, tmp_path):
    """Its args and env, run by the image's entry point (bash here): Spark's KubernetesExecutorBackend starts,
    parses what the pod gives it, and asks the driver (nobody listens) for the application's properties."""
    java = shutil.which("java")
    if java is None:
        pytest.skip("no java on PATH: the executor branch starts a JVM")
    pod, driver_port = executor_pod
    (container,) = pod["spec"]["containers"]
    fields = {"status.podIP": "127.0.0.1", "metadata.name": "mltrain-city-demand-features-exec-1"}
    env = {e["name"]: e.get("value") or fields[e["valueFrom"]["fieldRef"]["fieldPath"]] for e in container["env"]}
    # This machine's pyspark and Java stand in for the image's (the Dockerfile sets both to its own paths).
    env |= {"SPARK_LOCAL_DIRS": str(tmp_path), "PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    env |= {"SPARK_HOME": str(Path(pyspark.__file__).parent), "JAVA_HOME": str(Path(os.path.realpath(java)).parents[1])}
    result = subprocess.run(
        ["bash", str(ENTRYPOINT), *container["args"]],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "INFO KubernetesExecutorBackend: Started daemon with process name:" in output, output
    assert f"Failed to connect to /127.0.0.1:{driver_port}" in output, output
