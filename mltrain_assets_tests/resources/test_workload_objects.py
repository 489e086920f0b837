"""Every workload object names its run and its owner, gets an API token only where it needs one, and carries no credential."""

import kubernetes_validate
import pytest
from dagster import AssetExecutionContext, Failure, MaterializeResult, asset, materialize

from mltrain_assets.launch.local import command_params
from mltrain_assets.resources.compute import Compute
from mltrain_assets.resources.deployments import KubernetesCompute, PodCompute
from mltrain_assets.resources.spark import SparkConfig
from mltrain_assets_tests.resources.sample_distributed import SampleDistributedParams
from mltrain_assets_tests.resources.sample_workload import SampleParams

RUN_POD = {
    "MLTRAIN_RUN_POD_NAME": "dagster-run-5e1f0c2a-abcde",
    "MLTRAIN_RUN_POD_UID": "0b7c3a4e-1111-4222-8333-444455556666",
}
OWNER = {
    "apiVersion": "v1",
    "kind": "Pod",
    "name": RUN_POD["MLTRAIN_RUN_POD_NAME"],
    "uid": RUN_POD["MLTRAIN_RUN_POD_UID"],
    "controller": False,
    "blockOwnerDeletion": False,
}


IMAGE = "registry.example.com/mltrain@sha256:" + "a" * 64


def _k8s(**settings) -> KubernetesCompute:
    return KubernetesCompute(**{"image": IMAGE, **settings})


def _render(params, backend: PodCompute, profile: str = "default") -> tuple[str, list[dict]]:
    captured: dict = {}

    @asset
    def launching(context: AssetExecutionContext, compute: Compute) -> MaterializeResult:
        assert isinstance(compute, PodCompute)
        captured["run_id"] = context.run_id
        try:
            captured["objects"] = compute.render(context, compute.bind(params, context), timeout_s=600, profile=profile)
        except Failure as refused:
            captured["refused"] = refused.description
        return MaterializeResult()

    assert materialize([launching], resources={"compute": backend}).success
    if "refused" in captured:
        raise Failure(captured["refused"])
    return captured["run_id"], captured["objects"]


def test_a_pod_names_its_run_and_is_owned_by_the_run_pod(tmp_path, monkeypatch):
    for name, value in RUN_POD.items():
        monkeypatch.setenv(name, value)
    run_id, (pod,) = _render(SampleParams(), _k8s())
    kubernetes_validate.validate(pod, "1.30", strict=True)
    assert pod["metadata"]["labels"]["dagster/run-id"] == run_id
    assert pod["metadata"]["labels"]["app.kubernetes.io/part-of"] == "mltrain"
    assert pod["metadata"]["ownerReferences"] == [OWNER]
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_without_the_run_pod_known_there_is_no_owner(tmp_path, monkeypatch):
    monkeypatch.setenv("MLTRAIN_RUN_POD_NAME", RUN_POD["MLTRAIN_RUN_POD_NAME"])  # a name without a uid is no owner
    monkeypatch.delenv("MLTRAIN_RUN_POD_UID", raising=False)
    _, (pod,) = _render(SampleParams(), _k8s())
    assert "ownerReferences" not in pod["metadata"]


def test_the_job_and_its_service_name_their_run_and_owner_and_so_do_its_pods(tmp_path, monkeypatch):
    for name, value in RUN_POD.items():
        monkeypatch.setenv(name, value)
    backend = _k8s(train_nodes="2")
    run_id, (service, job) = _render(SampleDistributedParams(record_file=str(tmp_path / "r")), backend, "training")
    for obj in (service, job):
        kubernetes_validate.validate(obj, "1.30", strict=True)
        assert obj["metadata"]["labels"]["dagster/run-id"] == run_id
        assert obj["metadata"]["ownerReferences"] == [OWNER]
    template = job["spec"]["template"]
    assert template["metadata"]["labels"]["dagster/run-id"] == run_id  # the Job owns its pods already
    assert "ownerReferences" not in template["metadata"]
    assert template["spec"]["automountServiceAccountToken"] is False


def _spark_backend(**overrides) -> KubernetesCompute:
    settings = {
        "service_account": "mltrain-workloads",
        "spark_service_account": "mltrain-spark-driver",
        "spark": SparkConfig(master="k8s://https://kubernetes.default.svc:443"),
    }
    return _k8s(**{**settings, **overrides})


def test_only_a_spark_driver_on_kubernetes_gets_a_token_and_its_own_account(tmp_path):
    run_id, (driver, executor) = _render(SampleParams(), _spark_backend(), "spark")
    assert driver["spec"]["automountServiceAccountToken"] is True
    assert driver["spec"]["serviceAccountName"] == "mltrain-spark-driver"
    spec = executor["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False and spec["serviceAccountName"] == "mltrain-workloads"
    # Executors (Spark's pods, built on this template) name the run too; Spark makes the driver their owner.
    assert executor["template"]["metadata"]["labels"]["dagster/run-id"] == run_id
    assert "ownerReferences" not in executor["template"]["metadata"]
    conf = command_params(driver["spec"]["containers"][0]["args"])["spark"]["conf"]
    assert conf["spark.kubernetes.authenticate.executor.serviceAccountName"] == "mltrain-workloads"
    # A Spark workload without a k8s:// master talks to no API server.
    _, (local_driver,) = _render(SampleParams(), _spark_backend(spark=SparkConfig(master="local[2]")), "spark")
    assert local_driver["spec"]["automountServiceAccountToken"] is False
    assert local_driver["spec"]["serviceAccountName"] == "mltrain-workloads"


@pytest.mark.parametrize(
    ("uri", "secret", "rendered"),
    [
        ("http://mlflow:5000", "", "http://mlflow:5000"),
        ("https://ci:s3cr3t-pw@mlflow.example.com", "mltrain-env", "https://mlflow.example.com"),
        ("postgresql://mlflow:s3cr3t-pw@db:5432/mlflow", "mltrain-env", "postgresql://mlflow@db:5432/mlflow"),
    ],
)
def test_a_tracking_uri_reaches_the_pod_without_its_password(tmp_path, uri, secret, rendered):
    backend = _k8s(mlflow_tracking_uri=uri, env_secret=secret)
    _, (pod,) = _render(SampleParams(), backend)
    assert command_params(pod["spec"]["containers"][0]["args"])["mlflow"]["tracking_uri"] == rendered
    assert "s3cr3t-pw" not in str(pod)


@pytest.mark.parametrize(
    ("uri", "secret", "named"),
    [
        ("http://ci:s3cr3t-pw@mlflow:5000", "", "MLTRAIN_K8S_ENV_SECRET to a Secret holding MLFLOW_TRACKING_USERNAME"),
        ("postgresql://u:s3cr3t-pw@db/mlflow", "", "MLTRAIN_K8S_ENV_SECRET to a Secret holding PGPASSWORD"),
        ("mysql://u:s3cr3t-pw@db/mlflow", "mltrain-env", "a mysql store has no password variable"),
    ],
)
def test_a_tracking_uri_with_a_password_and_nowhere_safe_to_put_it_is_refused(tmp_path, uri, secret, named):
    backend = _k8s(mlflow_tracking_uri=uri, env_secret=secret)
    with pytest.raises(Failure, match="MLFLOW_TRACKING_URI carries a password") as refused:
        _render(SampleParams(), backend)
    assert named in str(refused.value) and "s3cr3t-pw" not in str(refused.value)


def test_any_other_credential_in_a_rendered_setting_is_refused(tmp_path):
    conf = '{"spark.hadoop.fs.s3a.secret.key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}'
    backend = _spark_backend(spark=SparkConfig(master="k8s://https://kubernetes.default.svc:443", conf_json=conf))
    with pytest.raises(Failure, match="refusing to render a credential into a pod spec") as refused:
        _render(SampleParams(), backend, "spark")
    assert "spark.hadoop.fs.s3a.secret.key" in str(refused.value)
    assert "wJalrXUtnFEMI" not in str(refused.value)
