"""Where data-plane workloads run: local subprocesses or Kubernetes pods, both through Dagster Pipes.

Assets call ``ComputeBackend.run`` with a workload's typed params; which backend runs it, and
with which Spark master, SQL engine and MLflow store, is configuration (``MLTRAIN_*``), never
asset code. The backend fills those runtime fields into the params before launching, so the
same object reaches a subprocess or a pod.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from dagster import (
    AssetExecutionContext,
    ConfigurableResource,
    DagsterExecutionInterruptedError,
    Failure,
    MetadataValue,
    PipesTempFileContextInjector,
    PipesTempFileMessageReader,
    open_pipes_session,
)

from mltrain_assets.workloads.common.params import MlflowSettings, WorkloadParams
from mltrain_assets.workloads.common.runtime import EXIT_DATA_REJECTED
from mltrain_assets.workloads.common.spark import SparkSettings

WorkloadProfile = Literal["default", "spark", "training"]
BACKENDS = ("local", "k8s")
# Between the polite signal to a workload's process group and SIGKILL to whatever is left.
KILL_GRACE_S = 10.0


@dataclass
class WorkloadResult:
    """What a finished workload reported back through Pipes."""

    summary: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0


class ComputeBackend(ConfigurableResource):
    """Launches a workload with its params, waits (polling), and returns its report.

    ``backend="local"`` runs ``python -m <module> --params JSON`` as a subprocess of the run
    worker; ``backend="k8s"`` runs the same command in a pod per workload with ``PipesK8sClient``.
    """

    backend: str = "local"  # "local" | "k8s" (a plain str so it can come from EnvVar)
    spark_master: str = "local[*]"
    spark_s3a: str = "false"  # "true": the Spark cluster has hadoop-aws, read s3:// inputs as s3a://
    sql_engine: str = "spark"  # "spark" | "duckdb": the engine for SQL feature workloads
    mlflow_tracking_uri: str = ""
    mlflow_artifacts_uri: str = ""
    python_executable: str = ""
    k8s_image: str = "mltrain:latest"
    k8s_namespace: str = "mltrain"
    k8s_service_account: str = ""
    k8s_image_pull_policy: str = "IfNotPresent"
    k8s_cpu: str = "2"
    k8s_memory: str = "8Gi"
    k8s_spark_cpu: str = "4"
    k8s_spark_memory: str = "16Gi"
    k8s_training_gpus: int = 0
    k8s_node_selector: dict[str, str] = {}
    k8s_training_node_selector: dict[str, str] = {}
    k8s_env_secret: str = ""

    def spark_settings(self) -> SparkSettings:
        return SparkSettings(master=self.spark_master, s3a=self.spark_s3a.strip().lower() in ("1", "true", "yes"))

    def mlflow_settings(self) -> MlflowSettings:
        return MlflowSettings(tracking_uri=self.mlflow_tracking_uri, artifacts_uri=self.mlflow_artifacts_uri)

    def bind(self, params: WorkloadParams) -> WorkloadParams:
        """The params with this deployment's runtime settings filled in (Spark, SQL engine, MLflow)."""
        settings = {"spark": self.spark_settings(), "mlflow": self.mlflow_settings(), "engine": self.sql_engine}
        names = {f.name for f in dataclasses.fields(params)}
        return dataclasses.replace(params, **{k: v for k, v in settings.items() if k in names})

    def command(self, params: WorkloadParams) -> list[str]:
        python = self.python_executable or (sys.executable if self.backend == "local" else "python")
        return params.command(python)

    def run(
        self,
        context: AssetExecutionContext,
        params: WorkloadParams,
        *,
        timeout_s: float,
        profile: WorkloadProfile = "default",
    ) -> WorkloadResult:
        if self.backend not in BACKENDS:
            raise Failure(
                description=f"MLTRAIN_COMPUTE={self.backend!r} is not a compute backend; use one of {BACKENDS}",
                allow_retries=False,
            )
        params = self.bind(params)
        workload = params.module
        started = time.monotonic()
        context.log.info(f"launching {workload} on {self.backend} ({profile}), timeout {timeout_s:.0f}s")
        runner = self._run_local if self.backend == "local" else self._run_k8s
        messages = runner(context, workload, self.command(params), timeout_s=timeout_s, profile=profile)
        summary: dict[str, Any] = {}
        for message in messages:
            if isinstance(message, dict):
                summary.update(message)
        if "data_rejected" in summary:
            # Bad input does not get better on retry: fail once, with the workload's own words.
            raise Failure(
                description=f"{workload} rejected its input: {summary['data_rejected']}",
                metadata={"rule_violation": MetadataValue.text(summary["data_rejected"])},
                allow_retries=False,
            )
        return WorkloadResult(summary=summary, elapsed_s=time.monotonic() - started)

    def _run_local(self, context, workload, command, *, timeout_s, profile) -> list[Any]:
        with open_pipes_session(
            context=context,
            context_injector=PipesTempFileContextInjector(),
            message_reader=PipesTempFileMessageReader(),
        ) as session:
            process = subprocess.Popen(
                command,
                env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", **session.get_bootstrap_env_vars()},
                start_new_session=True,  # its own process group, so a timeout kills torchrun/Spark children too
            )
            try:
                returncode = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired as timeout:
                _kill_group(process)
                raise Failure(
                    description=f"{workload} timed out after {timeout_s:.0f}s and was killed", allow_retries=True
                ) from timeout
            except DagsterExecutionInterruptedError:
                _kill_group(process, first=signal.SIGINT)
                raise
        messages = list(session.get_custom_messages())
        if returncode == EXIT_DATA_REJECTED:
            return messages
        if returncode != 0:
            raise Failure(description=f"{workload} failed with exit code {returncode}", allow_retries=True)
        return messages

    def pod_spec(self, profile: WorkloadProfile, timeout_s: float) -> dict[str, Any]:
        """The base pod spec for a profile: resources, GPUs, node selectors, deadline."""
        cpu, memory = (
            (self.k8s_spark_cpu, self.k8s_spark_memory) if profile == "spark" else (self.k8s_cpu, self.k8s_memory)
        )
        limits: dict[str, Any] = {"memory": memory}
        if profile == "training" and self.k8s_training_gpus:
            limits["nvidia.com/gpu"] = str(self.k8s_training_gpus)
        container: dict[str, Any] = {
            "name": "workload",
            "imagePullPolicy": self.k8s_image_pull_policy,
            "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": limits},
        }
        if self.k8s_env_secret:
            container["envFrom"] = [{"secretRef": {"name": self.k8s_env_secret}}]
        spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": int(timeout_s),
            "containers": [container],
        }
        selector = {**self.k8s_node_selector, **(self.k8s_training_node_selector if profile == "training" else {})}
        if selector:
            spec["nodeSelector"] = selector
        if self.k8s_service_account:
            spec["serviceAccountName"] = self.k8s_service_account
        return spec

    def _run_k8s(self, context, workload, command, *, timeout_s, profile) -> list[Any]:
        from dagster_k8s import PipesK8sClient

        passthrough = {
            name: os.environ[name]
            for name in ("MLTRAIN_STORAGE_URI", "MLTRAIN_LANDING_URI", "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL")
            if os.environ.get(name)
        }
        invocation = PipesK8sClient().run(
            context=context,
            image=self.k8s_image,
            command=command,
            namespace=self.k8s_namespace,
            env=passthrough,
            base_pod_spec=self.pod_spec(profile, timeout_s),
            base_pod_meta={"labels": {"app.kubernetes.io/part-of": "mltrain", "mltrain/profile": profile}},
        )
        return list(invocation.get_custom_messages())


def _kill_group(
    process: subprocess.Popen, first: signal.Signals = signal.SIGTERM, grace_s: float | None = None
) -> None:
    """Signal the workload's whole process group, give it ``grace_s``, then SIGKILL whatever is left.

    The leader exiting is not enough: a torchrun worker or Spark JVM that ignores or outlives the
    signal would keep running (and holding GPUs) after the run is gone.
    """
    deadline = time.monotonic() + (KILL_GRACE_S if grace_s is None else grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, first)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=max(deadline - time.monotonic(), 0))
    while time.monotonic() < deadline and _group_alive(process.pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
