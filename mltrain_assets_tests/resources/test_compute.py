"""The compute backend: Pipes subprocesses (report, rejection, timeout) and the k8s pod it would create."""

import time

import kubernetes
import kubernetes_validate
import pytest
from dagster import AssetExecutionContext, MaterializeResult, asset, materialize
from dagster_k8s.pipes import build_pod_body

from mltrain_assets.resources.compute import ComputeBackend

WORKLOAD = "mltrain_assets_tests.resources.sample_workload"


def _run(mode: str, timeout_s: float = 60):
    captured = {}

    @asset
    def probe(context: AssetExecutionContext, compute: ComputeBackend) -> MaterializeResult:
        captured["result"] = compute.run_workload(context, WORKLOAD, ["--mode", mode], timeout_s=timeout_s)
        return MaterializeResult(metadata={"elapsed_s": captured["result"].elapsed_s})

    result = materialize([probe], resources={"compute": ComputeBackend()}, raise_on_error=False)
    return result, captured.get("result")


def _failure_text(result) -> str:
    return " ".join(str(e.step_failure_data.error.message) for e in result.all_events if e.is_step_failure)


def test_local_backend_returns_the_workload_report():
    result, workload = _run("ok")
    assert result.success
    assert workload.summary == {"answer": 42, "mode": "ok"}


def test_data_rejection_fails_without_retry_and_names_the_rule():
    result, _ = _run("reject")
    assert not result.success
    text = _failure_text(result)
    assert "rejected its input" in text and "rule known_city" in text and "2026-01-02" in text


def test_timeout_kills_the_workload():
    started = time.monotonic()
    result, _ = _run("hang", timeout_s=3)
    assert not result.success
    assert "timed out after 3s" in _failure_text(result)
    assert time.monotonic() - started < 60


def test_crash_reports_exit_code():
    result, _ = _run("crash")
    assert not result.success
    assert "failed with exit code 1" in _failure_text(result)


@pytest.mark.parametrize("profile", ["default", "spark", "training"])
def test_k8s_pod_for_each_profile_is_a_valid_pod(profile):
    backend = ComputeBackend(
        backend="k8s",
        k8s_image="registry.example.com/mltrain:1.2.3",
        k8s_namespace="ml",
        k8s_service_account="mltrain-workloads",
        k8s_training_gpus=2,
        k8s_node_selector={"pool": "ml"},
        k8s_training_node_selector={"accelerator": "nvidia-h100"},
        k8s_env_secret="mltrain-aws",
    )
    spec = backend.pod_spec(profile, timeout_s=1800)
    pod = build_pod_body(
        pod_name="dagster-run-abc",
        image=backend.k8s_image,
        command=backend.command("mltrain_assets.workloads.train_demand", ["--city", "nyc"]),
        env_vars={"MLTRAIN_STORAGE_URI": "s3://bucket/prefix"},
        base_pod_meta={"labels": {"mltrain/profile": profile}},
        base_pod_spec=spec,
    )
    manifest = {"apiVersion": "v1", "kind": "Pod", **kubernetes.client.ApiClient().sanitize_for_serialization(pod)}
    kubernetes_validate.validate(manifest, "1.30", strict=True)
    container = manifest["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/mltrain:1.2.3"
    assert container["command"][:3] == ["python", "-m", "mltrain_assets.workloads.train_demand"]
    assert manifest["spec"]["activeDeadlineSeconds"] == 1800
    assert manifest["spec"]["serviceAccountName"] == "mltrain-workloads"
    if profile == "training":
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
        assert manifest["spec"]["nodeSelector"] == {"pool": "ml", "accelerator": "nvidia-h100"}
    else:
        assert "nvidia.com/gpu" not in container["resources"]["limits"]
        assert manifest["spec"]["nodeSelector"] == {"pool": "ml"}
    if profile == "spark":
        assert container["resources"]["requests"]["cpu"] == "4"
