"""Kubernetes objects: an Indexed Job + headless Service for multi-node work, executed for real by k8s-local."""

import json

import kubernetes_validate
import pytest
from dagster import AssetExecutionContext, Failure, MaterializeResult, asset, materialize

from mltrain_assets.launch.local import command_params
from mltrain_assets.resources.compute import Compute
from mltrain_assets.resources.deployments import KubernetesCompute, KubernetesHereCompute, PodCompute, RenderOnlyCompute
from mltrain_assets_tests.resources.sample_distributed import SampleDistributedParams


def _materialize(params, backend: PodCompute, captured: dict):
    @asset
    def distributed(context: AssetExecutionContext, compute: Compute) -> MaterializeResult:
        assert isinstance(compute, PodCompute)
        captured["objects"] = compute.render(context, compute.bind(params), timeout_s=600, profile="training")
        captured["result"] = compute.run(context, params, timeout_s=120, profile="training")
        return MaterializeResult()

    return materialize([distributed], resources={"compute": backend}, raise_on_error=False)


def _rendered(tmp_path, **settings) -> tuple[object, dict]:
    """A launch through ``RenderOnlyCompute`` (what ``mltrain manifests`` runs): the step's result and the record."""
    record = tmp_path / "rendered.json"
    backend = RenderOnlyCompute(render_to=str(record), **settings)
    result = _materialize(SampleDistributedParams(record_file=str(tmp_path / "r")), backend, {})
    return result, json.loads(record.read_text())


def test_several_nodes_render_a_headless_service_and_an_indexed_job(tmp_path):
    _, rendered = _rendered(tmp_path, train_nodes="8", train_gpus_per_node="8")
    service, job = rendered["objects"]
    for obj in (service, job):
        kubernetes_validate.validate(obj, "1.30", strict=True)
    name = job["metadata"]["name"]
    assert service["kind"] == "Service" and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"mltrain/job": name}
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 8
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == name and pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    params = command_params(container["args"])
    assert params["nnodes"] == 8 and params["nproc_per_node"] == 8 and params["node_rank"] == -1
    assert params["backend"] == "nccl" and params["device"] == "cuda"
    assert params["rdzv_endpoint"] == f"{name}-0.{name}:29400"
    # NCCL's shared memory: a memory-backed /dev/shm of the training profile's size, bounded scratch.
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]
    assert container["resources"]["requests"]["ephemeral-storage"] == "40Gi"


def test_one_node_is_one_pod(tmp_path):
    _, rendered = _rendered(tmp_path)
    (pod,) = rendered["objects"]
    assert pod["kind"] == "Pod"
    params = command_params(pod["spec"]["containers"][0]["args"])
    assert params["nnodes"] == 1 and params["nproc_per_node"] == 2 and params["device"] == "cpu"


def test_k8s_local_runs_each_index_of_the_job_as_a_process(tmp_path):
    captured: dict = {}
    record = tmp_path / "nodes.jsonl"
    backend = KubernetesHereCompute(train_nodes="2")
    result = _materialize(SampleDistributedParams(record_file=str(record)), backend, captured)
    assert result.success
    nodes = sorted((json.loads(line) for line in record.read_text().splitlines()), key=lambda n: n["node_rank"])
    assert [n["node_rank"] for n in nodes] == [0, 1]
    assert [n["completion_index"] for n in nodes] == ["0", "1"]
    # Pod 0's DNS name is mapped to this machine; both nodes meet at the same endpoint.
    endpoints = {n["rdzv_endpoint"] for n in nodes}
    assert len(endpoints) == 1 and next(iter(endpoints)).startswith("127.0.0.1:")
    assert all(n["world_size"] == 2 for n in nodes)  # 2 CPU processes, shared by the 2 nodes
    assert [n["pipes"] for n in nodes] == [True, False]  # only pod 0 talks to Dagster
    assert captured["result"].summary == {"reported_by": 0, "world_size": 2, "nnodes": 2}
    _, job = captured["objects"]
    assert job["spec"]["completions"] == 2


def test_a_k8s_launch_without_an_image_fails_naming_the_setting(tmp_path):
    """No silent `mltrain:latest`: the image is MLTRAIN_K8S_IMAGE, the code location's or the run's own."""

    @asset
    def distributed(context: AssetExecutionContext, compute: Compute) -> MaterializeResult:
        params = SampleDistributedParams(record_file=str(tmp_path / "r"))
        with pytest.raises(Failure, match=r"no workload image: set MLTRAIN_K8S_IMAGE"):
            compute.run(context, params, timeout_s=60, profile="training")
        return MaterializeResult()

    assert materialize([distributed], resources={"compute": KubernetesCompute(train_nodes="2")}).success


def test_the_image_is_the_code_locations_or_the_runs_own(monkeypatch):
    backend = KubernetesCompute()
    monkeypatch.setenv("DAGSTER_CURRENT_IMAGE", "registry.example.com/mltrain@sha256:" + "1" * 64)
    assert backend.workload_image() == "registry.example.com/mltrain@sha256:" + "1" * 64
    assert KubernetesCompute(image="explicit:1").workload_image() == "explicit:1"
    monkeypatch.delenv("DAGSTER_CURRENT_IMAGE")

    class Run:  # what a run pod's context knows: the image its code location recorded on the run
        class job_code_origin:
            class repository_origin:
                container_image = "registry.example.com/mltrain@sha256:" + "2" * 64

    class Context:
        dagster_run = Run()

    assert backend.workload_image(Context()) == "registry.example.com/mltrain@sha256:" + "2" * 64
    # Rendered only, or run here from a checkout: a placeholder naming the setting rather than a failure.
    assert "MLTRAIN_K8S_IMAGE" in KubernetesHereCompute().workload_image()
    assert "MLTRAIN_K8S_IMAGE" in RenderOnlyCompute(render_to="unused").workload_image()


def test_render_only_records_the_launch_and_stops_the_step_there(tmp_path):
    """``mltrain manifests``' launch: the objects, profile and resources recorded; no workload ran, no retry."""
    result, rendered = _rendered(tmp_path, train_nodes="2")
    assert not result.success, "nothing ran: the step cannot go on to commit or report"
    failures = [e.step_failure_data for e in result.all_events if e.is_step_failure]
    (failure,) = failures
    assert "rendered, not launched" in failure.error.message
    assert failure.user_failure_data is not None and failure.user_failure_data.metadata == {}
    assert not (tmp_path / "r").exists(), "the workload never ran"
    assert [o["kind"] for o in rendered["objects"]] == ["Service", "Job"]
    assert rendered["profile"] == "training" and rendered["resources"]["shm"] == "16Gi"
    # No Pipes session: its bootstrap shows as placeholders.
    env = rendered["objects"][1]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "DAGSTER_PIPES_CONTEXT", "value": "<set at launch by the Pipes session>"} in env


def test_the_indexed_job_ignores_disruptions_and_fails_at_once_on_a_reported_exit():
    """What the API server checks beyond the schema: podFailurePolicy needs restartPolicy Never, names a container
    of the template, and 0 is never an ``In`` exit code; maxFailedIndexes needs backoffLimitPerIndex."""
    from mltrain_assets.resources.k8s import PodTemplate, render_indexed_job
    from mltrain_assets.workloads.common.runtime import EXIT_DATA_REJECTED, EXIT_SERVICE_UNAVAILABLE

    _, job = render_indexed_job(
        PodTemplate(image="registry.example.com/mltrain:1", namespace="ml"),
        name="mltrain-train-1a2b",
        nodes=2,
        command=["python", "-m", "x"],
        env={},
        port=29400,
    )
    kubernetes_validate.validate(job, "1.30", strict=True)
    spec = job["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    ignore, fail = spec["podFailurePolicy"]["rules"]
    assert ignore == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert fail["action"] == "FailJob" and fail["onExitCodes"]["operator"] == "In"
    assert fail["onExitCodes"]["values"] == [EXIT_DATA_REJECTED, EXIT_SERVICE_UNAVAILABLE]
    assert fail["onExitCodes"]["containerName"] in [c["name"] for c in spec["template"]["spec"]["containers"]]
    assert spec["backoffLimitPerIndex"] >= 1 and spec["maxFailedIndexes"] == 0 and "backoffLimit" not in spec
    assert spec["podReplacementPolicy"] == "Failed"
