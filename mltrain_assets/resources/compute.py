"""Where data-plane workloads run: local subprocesses or Kubernetes pods, both through Dagster Pipes.

Assets call ``ComputeBackend.run_workload``; which backend runs it is configuration
(``MLTRAIN_COMPUTE``), never asset code.
"""

from __future__ import annotations

import contextlib
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

from mltrain_assets.workloads._runtime import EXIT_DATA_REJECTED

WorkloadProfile = Literal["default", "spark", "training"]
BACKENDS = ("local", "k8s")


@dataclass
class WorkloadResult:
    """What a finished workload reported back through Pipes."""

    summary: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0


class ComputeBackend(ConfigurableResource):
    """Launches a workload module with arguments, waits (polling), and returns its report.

    ``backend="local"`` runs ``python -m <workload>`` as a subprocess of the run worker;
    ``backend="k8s"`` runs the same command in a pod per workload with ``PipesK8sClient``.
    """

    backend: str = "local"  # "local" | "k8s" (a plain str so it can come from EnvVar)
    spark_master: str = "local[*]"
    sql_engine: str = "spark"  # "spark" | "duckdb": the engine for SQL feature workloads
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

    def command(self, workload: str, args: list[str]) -> list[str]:
        python = self.python_executable or (sys.executable if self.backend == "local" else "python")
        return [python, "-m", workload, *args]

    def run_workload(
        self,
        context: AssetExecutionContext,
        workload: str,
        args: list[str],
        *,
        timeout_s: float,
        profile: WorkloadProfile = "default",
        env: dict[str, str] | None = None,
    ) -> WorkloadResult:
        if self.backend not in BACKENDS:
            raise Failure(
                description=f"MLTRAIN_COMPUTE={self.backend!r} is not a compute backend; use one of {BACKENDS}"
            )
        started = time.monotonic()
        context.log.info(f"launching {workload} on {self.backend} ({profile}), timeout {timeout_s:.0f}s")
        runner = self._run_local if self.backend == "local" else self._run_k8s
        messages = runner(context, workload, args, timeout_s=timeout_s, profile=profile, env=env or {})
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

    def _run_local(self, context, workload, args, *, timeout_s, profile, env) -> list[Any]:
        command = self.command(workload, args)
        with open_pipes_session(
            context=context,
            context_injector=PipesTempFileContextInjector(),
            message_reader=PipesTempFileMessageReader(),
        ) as session:
            process = subprocess.Popen(
                command,
                env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", **env, **session.get_bootstrap_env_vars()},
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

    def _run_k8s(self, context, workload, args, *, timeout_s, profile, env) -> list[Any]:
        from dagster_k8s import PipesK8sClient

        passthrough = {
            name: os.environ[name]
            for name in ("MLTRAIN_STORAGE_URI", "MLTRAIN_LANDING_URI", "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL")
            if os.environ.get(name)
        }
        invocation = PipesK8sClient().run(
            context=context,
            image=self.k8s_image,
            command=self.command(workload, args),
            namespace=self.k8s_namespace,
            env={**passthrough, **env},
            base_pod_spec=self.pod_spec(profile, timeout_s),
            base_pod_meta={"labels": {"app.kubernetes.io/part-of": "mltrain", "mltrain/profile": profile}},
        )
        return list(invocation.get_custom_messages())


def _kill_group(process: subprocess.Popen, first: signal.Signals = signal.SIGTERM, grace_s: float = 10) -> None:
    try:
        os.killpg(process.pid, first)
        process.wait(timeout=grace_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
