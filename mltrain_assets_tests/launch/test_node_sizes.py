"""A pod no node of MLTRAIN_K8S_NODE_SIZES can hold is named before anyone submits it."""

import pytest

from mltrain_assets.launch.node_sizes import oversized, parse_node_sizes, pod_requests

SIZES = {
    "cpu": {"cpu": "16", "memory": "64Gi", "ephemeral-storage": "80Gi"},
    "gpu": {"cpu": "94", "memory": "1300Gi", "nvidia.com/gpu": "8", "ephemeral-storage": "80Gi"},
}


def _pod(name: str, requests: dict, limits: dict) -> dict:
    container = {"name": "w", "resources": {"requests": requests, "limits": limits}}
    return {"kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [container]}}


def _job(name: str, requests: dict, limits: dict) -> dict:
    return {
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"spec": _pod(name, requests, limits)["spec"]}},
    }


def test_a_gpu_pod_is_asked_for_by_its_limit_and_summed_over_containers():
    spec = _pod("p", {"cpu": "8", "memory": "64Gi"}, {"memory": "64Gi", "nvidia.com/gpu": "8"})["spec"]
    spec["containers"].append({"name": "side", "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}})
    assert pod_requests(spec) == {"cpu": "8500m", "memory": "66048Mi", "nvidia.com/gpu": "8"}


def test_what_fits_a_pool_passes_and_what_fits_none_is_named_with_each_shortfall():
    fits = _job("train", {"cpu": "88", "memory": "1000Gi", "ephemeral-storage": "40Gi"}, {"nvidia.com/gpu": "8"})
    boot_disk = _job(
        "big-disk", {"cpu": "88", "memory": "1000Gi", "ephemeral-storage": "500Gi"}, {"nvidia.com/gpu": "8"}
    )
    small = _pod("cpu-pod", {"cpu": "2", "memory": "8Gi", "ephemeral-storage": "10Gi"}, {"memory": "8Gi"})
    assert oversized([fits, small], SIZES) == []
    (warning,) = oversized([boot_disk, small], SIZES)
    assert warning.startswith(
        "warning: Job/big-disk requests cpu 88, memory 1000Gi, nvidia.com/gpu 8, ephemeral-storage 500Gi per pod"
    )
    assert "gpu: ephemeral-storage 500Gi > 80Gi" in warning
    assert "cpu: cpu 88 > 16, memory 1000Gi > 64Gi, nvidia.com/gpu 8 > 0, ephemeral-storage 500Gi > 80Gi" in warning
    assert "MLTRAIN_K8S_NODE_SIZES" in warning and "Pending" in warning


def test_no_sizes_no_check():
    assert oversized([_pod("p", {"cpu": "1000"}, {})], {}) == []


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ('{"gpu": {"gpus": "8"}}', "gpu.gpus: unknown resource"),
        ('{"gpu": {"memory": "lots"}}', "gpu.memory: 'lots' is not a Kubernetes quantity"),
        ('["gpu"]', "must be a JSON object"),
    ],
)
def test_bad_sizes_are_named(raw, named):
    with pytest.raises(ValueError, match="MLTRAIN_K8S_NODE_SIZES") as refused:
        parse_node_sizes(raw)
    assert named in str(refused.value)


def test_the_setting_is_checked_at_load():
    from mltrain_assets.settings import settings_problems

    assert not [p for p in settings_problems({"MLTRAIN_K8S_NODE_SIZES": ""}) if "NODE_SIZES" in p]
    (problem,) = [p for p in settings_problems({"MLTRAIN_K8S_NODE_SIZES": '{"gpu": {"gpus": 8}}'}) if "NODE_SIZES" in p]
    assert problem.startswith("MLTRAIN_K8S_NODE_SIZES=")
