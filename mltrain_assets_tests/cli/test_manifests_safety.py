"""Every asset's objects in k8s mode: no credential, a token only for the Spark driver, a warning for what no node fits."""

import os
import subprocess
import sys

import pytest

from mltrain_assets.resources.credentials import credential_findings
from mltrain_assets_tests.cli.conftest import CITY, DATE
from mltrain_assets_tests.cli.test_manifests import LAUNCHES, REPO

AWS_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"  # AWS's documented example, split so test_no_secrets passes this file
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PRODUCTION_LIKE = {
    "MLTRAIN_SPARK_MASTER": "k8s://https://kubernetes.default.svc:443",
    "MLTRAIN_K8S_IMAGE": "registry.example.com/mltrain@sha256:" + "a" * 64,
    "MLTRAIN_K8S_SERVICE_ACCOUNT": "mltrain-workloads",
    "MLTRAIN_K8S_SPARK_SERVICE_ACCOUNT": "mltrain-spark-driver",
    "MLTRAIN_K8S_ENV_SECRET": "mltrain-env",
    "MLTRAIN_TRAIN_NODES": "2",
    # Credentials on the rendering machine, and a tracking server with a password: none may reach an object.
    "MLFLOW_TRACKING_URI": "http://ci:tracking-pw-123@mlflow.mltrain.svc.cluster.local:5000",
    "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
    "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
}


@pytest.mark.parametrize("asset", sorted(LAUNCHES))
def test_no_rendered_object_carries_a_credential_or_an_unneeded_token(upstream, monkeypatch, asset):
    from mltrain_assets.cli import manifests

    for name, value in PRODUCTION_LIKE.items():
        monkeypatch.setenv(name, value)
    partition = f"{CITY}|{DATE}" if asset in ("city_demand_model", "demand_forecasts") else DATE
    objects = manifests.render(asset, partition)
    manifests.validate(objects)
    for obj in objects:
        assert credential_findings(obj) == []
        for secret in ("tracking-pw-123", AWS_KEY_ID, AWS_SECRET):
            assert secret not in str(obj)
        spec = (obj.get("spec") or {}).get("template", {}).get("spec") or obj.get("template", {}).get("spec")
        spec = spec or obj.get("spec")
        if obj["kind"] == "Service":
            continue
        driver = obj["kind"] == "Pod" and obj["metadata"]["labels"]["mltrain/profile"] == "spark"
        assert spec["automountServiceAccountToken"] is driver, obj["metadata"].get("name")
        assert spec["serviceAccountName"] == ("mltrain-spark-driver" if driver else "mltrain-workloads")


def test_manifests_warns_when_no_node_fits_a_request(upstream):
    env = {
        **os.environ,
        "MLTRAIN_TRAIN_NODES": "2",
        "MLTRAIN_TRAIN_GPUS_PER_NODE": "8",
        "MLTRAIN_WORKLOAD_RESOURCES": '{"training": {"ephemeral_storage": "500Gi", "scratch": "400Gi"}}',
        "MLTRAIN_K8S_NODE_SIZES": '{"a100": {"cpu": "94", "memory": "1300Gi", "nvidia.com/gpu": "8", '
        '"ephemeral-storage": "80Gi"}}',
    }
    command = [sys.executable, "-m", "mltrain_assets.cli", "manifests", "--asset", "recommender_model"]
    result = subprocess.run(
        [*command, "--partition", DATE], capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kind: Job" in result.stdout  # printed all the same: a warning, not a refusal
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warning.startswith("warning: Job/mltrain-recommender-model-")
    assert "a100: ephemeral-storage 500Gi > 80Gi" in warning
    # The defaults fit an ordinary 8-GPU node with a 100 GB boot disk.
    env["MLTRAIN_WORKLOAD_RESOURCES"] = "{}"
    result = subprocess.run(
        [*command, "--partition", DATE], capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )
    assert result.returncode == 0 and "warning:" not in result.stderr, result.stderr[-3000:]
