"""The compute resources: Pipes subprocesses (report, rejection, timeout, interrupt), the k8s pod, the deployment choice."""

import dataclasses
import os
import signal
import time
from pathlib import Path

import kubernetes
import kubernetes_validate
import pytest
from dagster import (
    AssetExecutionContext,
    DagsterEventType,
    DagsterExecutionInterruptedError,
    MaterializeResult,
    RetryPolicy,
    asset,
    materialize,
)
from dagster_k8s.client import DagsterKubernetesClient
from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR

from mltrain_assets.launch import supervisor
from mltrain_assets.resources import k8s_cluster
from mltrain_assets.resources.compute import Compute
from mltrain_assets.resources.deployments import KubernetesCompute, KubernetesHereCompute, LocalCompute
from mltrain_assets.resources.spark import SparkConfig
from mltrain_assets.workloads.common.spark import SparkSettings
from mltrain_assets_tests.resources.sample_workload import SampleParams

# The same deployment settings for every deployment: only where the command runs differs.
SETTINGS = {
    "spark": SparkConfig(master="spark://spark-master:7077"),
    "sql_engine": "duckdb",
    "mlflow_tracking_uri": "http://mlflow:5000",
    "mlflow_artifacts_uri": "s3://mltrain/mlartifacts",
}


def _run(
    params: SampleParams,
    timeout_s: float = 60,
    backend: Compute | None = None,
    profile: str = "default",
    retries: int = 1,
):
    captured = {}

    # Retries are allowed by default, so a test can tell a failure that must not be retried from one that may be.
    @asset(retry_policy=RetryPolicy(max_retries=retries) if retries else None)
    def probe(context: AssetExecutionContext, compute: Compute) -> MaterializeResult:  # any deployment
        captured["result"] = compute.run(context, params, timeout_s=timeout_s, profile=profile)
        return MaterializeResult(metadata={"elapsed_s": captured["result"].elapsed_s})

    result = materialize([probe], resources={"compute": backend or LocalCompute()}, raise_on_error=False)
    return result, captured.get("result")


def _failure_text(result) -> str:
    """The error of every failed attempt, retried ones included."""
    errors = [e.step_failure_data.error for e in result.all_events if e.is_step_failure]
    errors += [e.event_specific_data.error for e in result.all_events if e.is_step_up_for_retry]
    texts = []
    for error in errors:
        while error is not None:  # a retry's own message is generic; the workload's is in its cause
            texts.append(str(error.message))
            error = error.cause or error.context
    return " ".join(texts)


def _retries(result) -> int:
    return sum(e.event_type == DagsterEventType.STEP_UP_FOR_RETRY for e in result.all_events)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


@pytest.fixture
def fast_kill(monkeypatch):
    """A short grace between the polite signal and SIGKILL, so a stubborn child costs 1 s, not 10."""
    monkeypatch.setattr(supervisor, "KILL_GRACE_S", 1.0)


@pytest.fixture
def reap_stragglers():
    """Kill (by PID) any child a failing test leaves behind."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_service_settings_reach_only_the_fields_that_declare_them():
    """A params field that happens to be called `spark` or `engine` is the workload's own, never overwritten."""
    from mltrain_assets.workloads.common.params import WorkloadParams, runtime

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Named(WorkloadParams):
        module = "nowhere"
        spark: str = runtime(default="mine")
        engine: str = "mine too"
        parity: int = 7

    bound = LocalCompute(**SETTINGS).bind(Named())
    assert (bound.spark, bound.engine, bound.parity) == ("mine", "mine too", 7)
    declared = LocalCompute(**SETTINGS).bind(SampleParams(mode="ok"))
    assert declared.engine == "duckdb" and declared.spark.master == "spark://spark-master:7077"
    assert declared.mlflow.tracking_uri == "http://mlflow:5000"


def test_local_backend_returns_the_workload_report():
    result, workload = _run(SampleParams(mode="ok"))
    assert result.success
    assert workload.summary == {"answer": 42, "mode": "ok"}


def test_local_backend_fills_runtime_settings_into_the_params():
    result, workload = _run(SampleParams(mode="echo", city="sf"), backend=LocalCompute(**SETTINGS))
    assert result.success
    received = SampleParams.from_dict(workload.summary["params"])
    assert received.city == "sf" and received.mode == "echo"
    assert received.engine == "duckdb"
    assert received.spark == SparkSettings(master="spark://spark-master:7077")
    assert received.mlflow.tracking_uri == "http://mlflow:5000"
    assert received.mlflow.artifacts_uri == "s3://mltrain/mlartifacts"
    # Launched from an asset: the MLflow run can link back to this Dagster run and partition.
    assert received.mlflow.dagster_run_id == result.run_id and received.mlflow.dagster_asset_key == "probe"


def test_data_rejection_fails_without_retry_and_names_the_rule():
    result, _ = _run(SampleParams(mode="reject"))
    assert not result.success
    text = _failure_text(result)
    assert "rejected its input" in text and "rule known_city" in text and "2026-01-02" in text
    assert _retries(result) == 0, "bad data does not get better on retry"


def test_a_service_down_through_its_clients_retries_fails_once_naming_it():
    result, _ = _run(SampleParams(mode="service_down"))
    assert not result.success
    assert "object store http://127.0.0.1:9 unreachable after 3 attempts" in _failure_text(result)
    assert _retries(result) == 0, "its client already retried for its whole budget"


def test_crash_reports_exit_code_and_may_be_retried():
    result, _ = _run(SampleParams(mode="crash"))
    assert not result.success
    assert "failed with exit code 1" in _failure_text(result)
    assert _retries(result) == 1


@pytest.mark.parametrize(
    ("value", "deployment"),
    [("local", LocalCompute), ("k8s", KubernetesCompute), ("k8s-local", KubernetesHereCompute), ("", LocalCompute)],
)
def test_mltrain_compute_picks_the_deployments_resource_with_its_settings_from_the_environment(
    value, deployment, monkeypatch
):
    from mltrain_assets.settings import default_environment

    for name, default in default_environment().items():  # what the code location sets before it loads
        monkeypatch.setenv(name, os.environ.get(name, default))
    monkeypatch.setenv("MLTRAIN_COMPUTE", value)
    monkeypatch.setenv("MLTRAIN_SQL_ENGINE", "duckdb")
    monkeypatch.setenv("MLTRAIN_K8S_NAMESPACE", "ml-team")
    compute = Compute.from_settings()
    assert type(compute) is deployment
    # Read from the environment when the resource is set up (EnvVar: the UI shows the variable, not a copy).
    with compute.process_config_and_initialize_cm() as ready:
        assert ready.sql_engine == "duckdb"
        if value in ("k8s", "k8s-local"):
            assert ready.namespace == "ml-team"


def test_an_unknown_deployment_is_refused_naming_the_setting_and_the_choices(monkeypatch):
    from mltrain_assets.settings import SettingsError

    monkeypatch.setenv("MLTRAIN_COMPUTE", "nomad")
    with pytest.raises(
        SettingsError, match="MLTRAIN_COMPUTE='nomad' is not a deployment: use one of local, k8s, k8s-local"
    ):
        Compute.from_settings()


def test_timeout_kills_the_workload_and_its_children(tmp_path, fast_kill, reap_stragglers):
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    # No retry here: the retried attempt would start a second child.
    result, _ = _run(SampleParams(mode="hang", pid_file=str(pid_file)), timeout_s=4, retries=0)
    assert pid_file.exists(), "the workload started its child before the timeout"
    child = int(pid_file.read_text())
    reap_stragglers.append(child)
    assert not result.success
    assert "timed out after 4s" in _failure_text(result)
    assert _gone_within(child, 5), "a child that ignores SIGTERM is killed with the workload's process group"
    assert time.monotonic() - started < 60


def test_interrupted_run_kills_the_workload_process_group(tmp_path, monkeypatch, fast_kill, reap_stragglers):
    """A terminated run interrupts the wait: the workload and everything it started must die with it."""
    pid_file = tmp_path / "child.pid"
    real_sample = supervisor.sample
    interrupted: list[int] = []

    def sample(meters):
        """The supervisor's poll loop: once the workload has started its child, the run is terminated."""
        real_sample(meters)
        if pid_file.exists() and not interrupted:
            interrupted.append(meters[0].sid)  # the workload's pid (its own session)
            # What Dagster raises inside a step when the run is terminated.
            raise DagsterExecutionInterruptedError()

    monkeypatch.setattr(supervisor, "sample", sample)
    try:
        result, _ = _run(SampleParams(mode="hang", pid_file=str(pid_file)), retries=0)
        assert not result.success
    except DagsterExecutionInterruptedError:
        pass  # in-process execution may surface the interrupt itself
    assert interrupted, "the workload was launched and waited on"
    assert pid_file.exists(), "the workload started its child before the interrupt"
    child = int(pid_file.read_text())
    reap_stragglers.append(child)
    assert not _alive(interrupted[0]), "the workload itself is gone"
    assert _gone_within(child, 5), "the child that ignores SIGINT is killed with the workload's process group"


class _PodSubmitted(Exception):
    """Raised by the fake API instead of creating the pod: the body is what we check."""


@pytest.mark.parametrize("profile", ["default", "spark", "training"])
def test_k8s_backend_submits_a_valid_pod_running_the_same_params(profile, monkeypatch):
    submitted: dict = {}

    class FakeCoreApi:
        def create_namespaced_pod(self, namespace, body):
            submitted["namespace"], submitted["body"] = namespace, body
            raise _PodSubmitted()

        def delete_namespaced_pod(self, name, namespace):
            submitted["deleted"] = name

    class FakeClient:
        core_api = FakeCoreApi()
        batch_api = None

    # Only the Kubernetes API client is faked: the launch goes through the backend's real k8s path.
    monkeypatch.setattr(k8s_cluster, "load_kube_config", lambda: None)
    monkeypatch.setattr(DagsterKubernetesClient, "production_client", classmethod(lambda cls, **kw: FakeClient()))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.storage:9000")
    backend = KubernetesCompute(
        image="registry.example.com/mltrain:1.2.3",
        namespace="ml",
        service_account="mltrain-workloads",
        train_gpus_per_node="2",
        node_selector='{"pool": "ml"}',
        training_node_selector='{"accelerator": "nvidia-h100"}',
        training_tolerations='[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]',
        env_secret="mltrain-aws",
        # A (non-distributed) training step's GPUs come from the resources setting, like its CPU and memory.
        workload_resources='{"training": {"gpus": 2, "cpu": "6"}, "default": {"memory": "4Gi"}}',
        **SETTINGS,
    )
    params = SampleParams(mode="echo", city="sf")
    result, _ = _run(params, timeout_s=1800, backend=backend, profile=profile, retries=0)
    assert not result.success and "body" in submitted, "the real k8s launch path reached the API"
    assert "deleted" not in submitted, "a pod that was never created is not deleted"

    assert submitted["namespace"] == "ml"
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        **kubernetes.client.ApiClient().sanitize_for_serialization(submitted["body"]),
    }
    kubernetes_validate.validate(manifest, "1.30", strict=True)
    spec = manifest["spec"]
    container = spec["containers"][0]
    assert container["image"] == "registry.example.com/mltrain:1.2.3"
    assert container["args"][:4] == ["python", "-m", SampleParams.module, "--params"]
    submitted_params = SampleParams.from_json(container["args"][-1])
    assert submitted_params.mlflow.dagster_run_id and submitted_params.mlflow.dagster_asset_key == "probe"
    # Everything else is exactly what bind() fills in, and the command is the params' own (python in the image).
    bound = dataclasses.replace(backend.bind(params), mlflow=submitted_params.mlflow)
    assert container["args"] == bound.command("python")
    assert container["envFrom"] == [{"secretRef": {"name": "mltrain-aws"}}]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    from_pod = {e["name"]: e["valueFrom"] for e in container["env"] if "valueFrom" in e}
    # A training node binds its rendezvous to its own pod IP and sizes its threads by its own CPU request.
    assert from_pod == (
        {
            "MLTRAIN_POD_IP": {"fieldRef": {"fieldPath": "status.podIP"}},
            "MLTRAIN_NODE_CPUS": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1"}},
        }
        if profile == "training"
        else {}
    )
    # The environment is passed explicitly: the same settings the local backend adds to its subprocess.
    assert {k: v for k, v in env.items() if not k.startswith("DAGSTER_PIPES")} == backend.workload_env()
    assert env["AWS_ENDPOINT_URL"] == "http://minio.storage:9000" and DAGSTER_PIPES_CONTEXT_ENV_VAR in env
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]
    assert manifest["metadata"]["labels"]["mltrain/profile"] == profile
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 1800
    assert spec["serviceAccountName"] == "mltrain-workloads"
    if profile == "training":
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
        assert spec["nodeSelector"] == {"pool": "ml", "accelerator": "nvidia-h100"}
        assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    else:
        assert "nvidia.com/gpu" not in container["resources"]["limits"]
        assert spec["nodeSelector"] == {"pool": "ml"}
        assert "tolerations" not in spec
    assert container["resources"]["requests"]["cpu"] == {"spark": "4", "training": "6"}.get(profile, "2")
    memory = {"spark": "16Gi", "training": "64Gi"}.get(profile, "4Gi")
    assert container["resources"]["requests"]["memory"] == container["resources"]["limits"]["memory"] == memory
    # Bounded node-local disk: requested, and the scratch volume evicts rather than filling the node.
    scratch = next(v for v in spec["volumes"] if v["name"] == "scratch")
    assert container["resources"]["requests"]["ephemeral-storage"] and scratch["emptyDir"]["sizeLimit"]
    shm = [v for v in spec["volumes"] if v["name"] == "shm"]
    if profile == "training":  # NCCL and DataLoader workers need more than the runtime's 64 MiB of /dev/shm
        assert shm == [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}]
        assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    else:
        assert not shm

    # The pod's --params parse back to exactly what the local backend hands its subprocess.
    in_pod = SampleParams.from_json(container["args"][-1])
    local_result, local = _run(params, backend=LocalCompute(**SETTINGS))
    assert local_result.success
    local_params = SampleParams.from_dict(local.summary["params"])
    assert dataclasses.replace(in_pod, mlflow=local_params.mlflow) == local_params
    assert (in_pod.mlflow.tracking_uri, in_pod.mlflow.artifacts_uri) == (
        local_params.mlflow.tracking_uri,
        local_params.mlflow.artifacts_uri,
    )
    assert in_pod.spark.master == "spark://spark-master:7077" and in_pod.engine == "duckdb"


@pytest.mark.parametrize("deployment", [LocalCompute, KubernetesHereCompute])
def test_a_launch_reports_the_cpu_and_peak_memory_of_its_whole_process_tree(deployment):
    """CPU of the workload and of a child nobody waits for (as a Spark JVM outlives its driver); peak RSS."""
    params = SampleParams(mode="ok", burn_s=1.0, alloc_mb=150, orphan_burn_s=0.8)
    result, workload = _run(params, backend=deployment(), retries=0)
    assert result.success and workload.summary == {"answer": 42, "mode": "ok"}
    assert workload.cpu_s >= 1.0 + 0.8, "the orphan's CPU is counted too"
    assert workload.wall_s >= 1.0 and workload.cpu_s <= workload.wall_s * (os.cpu_count() or 1)
    assert 150 <= workload.peak_rss_mb < 4_096
    assert workload.measured == "wait4 + /proc"


def test_k8s_pods_are_not_metered_by_the_run_worker_and_it_says_so(monkeypatch):
    from mltrain_assets.launch import LaunchResult

    class PodRan:  # a pod that succeeded on a cluster: an exit code, nothing the run worker could meter
        def launch(self, launch):
            return LaunchResult(returncodes=[0])

    monkeypatch.setattr(KubernetesCompute, "launcher", lambda self, *args, **kwargs: PodRan())
    backend = KubernetesCompute(image="registry.example.com/mltrain:1")
    result, workload = _run(SampleParams(mode="ok"), backend=backend, retries=0)
    assert result.success
    assert workload.cpu_s is None and workload.peak_rss_mb is None
    assert "not measured" in workload.measured and "metrics" in workload.measured
    assert workload.wall_s >= 0


def test_peak_memory_is_the_workloads_not_the_run_workers():
    """Linux carries a parent's peak RSS into a forked child's ru_maxrss: a big run worker must not show."""
    held = bytearray(768 * 1024 * 1024)  # the run worker's memory, resident (zero-filled pages are touched)
    result, workload = _run(SampleParams(mode="ok", burn_s=0.5), retries=0)
    assert result.success and len(held) > 0
    assert 0 < workload.peak_rss_mb < 700, workload.peak_rss_mb
