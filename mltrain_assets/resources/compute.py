"""Where data-plane workloads run: local subprocesses or Kubernetes pods, both through Dagster Pipes.

Assets call ``ComputeBackend.run`` with a workload's typed params; which backend runs it, and
with which Spark master, SQL engine and MLflow store, is configuration (``MLTRAIN_*``), never
asset code. The backend fills those runtime fields into the params before launching, so the
same object reaches a subprocess or a pod.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import resource
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

from mltrain_assets.loopback import free_port
from mltrain_assets.resources.k8s import (
    PodTemplate,
    command_params,
    executor_pod_template,
    object_name,
    pod_meta,
    pod_spec,
    render_indexed_job,
    render_pod,
    rendezvous_endpoint,
    spark_executor_object,
    with_params,
    workload_command,
)
from mltrain_assets.resources.k8s_jobs import run_indexed_job
from mltrain_assets.resources.spark import SparkConfig
from mltrain_assets.resources.workload_resources import WorkloadResources, parse_overrides, resolve
from mltrain_assets.workloads.common.params import (
    COMPLETION_INDEX_ENV,
    DistributedParams,
    MlflowSettings,
    WorkloadParams,
)
from mltrain_assets.workloads.common.runtime import EXIT_DATA_REJECTED, EXIT_SERVICE_UNAVAILABLE
from mltrain_assets.workloads.common.spark import SparkSettings

# Exit codes after which the workload reported why (the summary says what the user sees).
REPORTED_EXITS = (EXIT_DATA_REJECTED, EXIT_SERVICE_UNAVAILABLE)

# What a workload reported before a reported exit, as one failure without step retries:
# (summary key, description, metadata key).
_NO_RETRY_SUMMARIES = (
    # Its client retried for a bounded budget already; stacking step retries on it would multiply the wait.
    ("service_unavailable", "{workload}: {reason}", "service_unavailable"),
    ("misconfigured", "{workload} is misconfigured: {reason}", "misconfigured"),
    # A committed input failed verification and was quarantined: rebuilding it, not retrying, helps.
    ("input_corrupt", "{workload}: an input is corrupt: {reason}", "input_corrupt"),
    # Bad input does not get better on retry: fail once, with the workload's own words.
    ("data_rejected", "{workload} rejected its input: {reason}", "rule_violation"),
)

WorkloadProfile = Literal["default", "spark", "training"]
BACKENDS = ("local", "k8s", "k8s-local")
# Between the polite signal to a workload's process group and SIGKILL to whatever is left.
KILL_GRACE_S = 10.0
# What a workload's environment needs besides its params: object-store endpoints and region.
# Credentials come from the pod's Secret (MLTRAIN_K8S_ENV_SECRET) or the machine's own environment.
WORKLOAD_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
# Where `mltrain manifests` collects what a dry run would submit.
RENDERED: list[dict[str, Any]] = []
# After a workload's main process exits, how long to keep watching what it started and left running
# (a local Spark JVM outlives its Python driver by a moment) to count its CPU.
SETTLE_S = 5.0
K8S_NOT_MEASURED = (
    "not measured: the pod runs on a cluster node; its CPU and memory are the cluster's metrics "
    "(metrics-server / cAdvisor: container_cpu_usage_seconds_total, container_memory_working_set_bytes)"
)


@dataclass
class WorkloadResult:
    """What a finished workload reported back through Pipes, and what running it cost.

    ``cpu_s`` is user + system CPU seconds of every process the launch started (the workload and
    everything below it; on k8s-local each pod's tree, summed); ``peak_rss_mb`` the largest resident
    memory of one launched tree (one pod). Both are ``None`` where the run worker cannot see the
    processes (``k8s``: see ``measured``).
    """

    summary: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_s: float | None = None
    peak_rss_mb: float | None = None
    measured: str = ""  # how cpu_s and peak_rss_mb were measured, or why they were not

    @property
    def elapsed_s(self) -> float:
        return self.wall_s


class DryRun(Failure):
    """Raised instead of launching when the backend only renders what it would submit (never retried)."""

    def __init__(self, description: str):
        super().__init__(description=description, allow_retries=False)


class ComputeBackend(ConfigurableResource):
    """Launches a workload with its params, waits (polling), and returns its report.

    ``backend="local"`` runs ``python -m <module> --params JSON`` as a subprocess of the run
    worker; ``backend="k8s"`` submits the same command as a Pod (``PipesK8sClient``) or, for a
    distributed workload over several nodes, as an Indexed Job + headless Service;
    ``backend="k8s-local"`` renders exactly those objects and runs each pod's container on this
    machine. The backend fills the deployment's runtime settings into the params (``bind``).
    """

    backend: str = "local"  # "local" | "k8s" | "k8s-local" (a plain str so it can come from EnvVar)
    spark: SparkConfig | None = None  # the one Spark configuration (default: local[*])
    sql_engine: str = "spark"  # "spark" | "duckdb": the engine for SQL feature workloads
    engine_parity: str = "true"  # "true" | "false": SQL workloads recheck their output on the other engine
    mlflow_tracking_uri: str = ""
    mlflow_artifacts_uri: str = ""
    dagster_ui_url: str = ""  # MLTRAIN_DAGSTER_UI_URL: MLflow runs link back to the Dagster run and partition
    # Distributed training: nodes x GPUs per node (0: CPU processes, gloo).
    train_nodes: str = "1"
    train_gpus_per_node: str = "0"
    rendezvous_port: int = 29400
    python_executable: str = ""
    # The workload image; empty: the run's own image (``image``), so the chart's digest is its one place.
    k8s_image: str = ""
    k8s_namespace: str = "mltrain"
    k8s_service_account: str = ""
    k8s_image_pull_policy: str = "IfNotPresent"
    # CPU, memory, GPUs, scratch, /dev/shm and timeout per profile and step (resources/workload_resources.py).
    workload_resources: str = "{}"
    k8s_node_selector: str = "{}"  # JSON object, every workload pod
    k8s_training_node_selector: str = "{}"  # JSON object, pods that request GPUs (a GPU node pool)
    k8s_training_tolerations: str = "[]"  # JSON list, pods that request GPUs (e.g. nvidia.com/gpu taints)
    k8s_env_secret: str = ""  # Secret whose keys become env vars of every workload pod
    dry_run: bool = False  # render what would be submitted (RENDERED) and launch nothing

    @classmethod
    def from_settings(cls, **overrides: Any) -> ComputeBackend:
        """The backend configured from the ``MLTRAIN_*`` settings (as ``EnvVar``s, shown in the UI)."""
        from dagster import EnvVar

        settings = {
            "backend": EnvVar("MLTRAIN_COMPUTE"),
            "spark": SparkConfig(
                master=EnvVar("MLTRAIN_SPARK_MASTER"),
                conf_json=EnvVar("MLTRAIN_SPARK_CONF"),
                s3a=EnvVar("MLTRAIN_SPARK_S3A"),
            ),
            "sql_engine": EnvVar("MLTRAIN_SQL_ENGINE"),
            "engine_parity": EnvVar("MLTRAIN_ENGINE_PARITY"),
            "mlflow_tracking_uri": EnvVar("MLFLOW_TRACKING_URI"),
            "mlflow_artifacts_uri": EnvVar("MLTRAIN_MLFLOW_ARTIFACTS_URI"),
            "dagster_ui_url": EnvVar("MLTRAIN_DAGSTER_UI_URL"),
            "train_nodes": EnvVar("MLTRAIN_TRAIN_NODES"),
            "train_gpus_per_node": EnvVar("MLTRAIN_TRAIN_GPUS_PER_NODE"),
            "k8s_image": EnvVar("MLTRAIN_K8S_IMAGE"),
            "workload_resources": EnvVar("MLTRAIN_WORKLOAD_RESOURCES"),
            "k8s_namespace": EnvVar("MLTRAIN_K8S_NAMESPACE"),
            "k8s_service_account": EnvVar("MLTRAIN_K8S_SERVICE_ACCOUNT"),
            "k8s_env_secret": EnvVar("MLTRAIN_K8S_ENV_SECRET"),
            "k8s_node_selector": EnvVar("MLTRAIN_K8S_NODE_SELECTOR"),
            "k8s_training_node_selector": EnvVar("MLTRAIN_K8S_TRAINING_NODE_SELECTOR"),
            "k8s_training_tolerations": EnvVar("MLTRAIN_K8S_TRAINING_TOLERATIONS"),
        }
        return cls(**{**settings, **overrides})

    # ------------------------------------------------------------------ settings

    def image(self, context: AssetExecutionContext | None = None) -> str:
        """The workload image: ``MLTRAIN_K8S_IMAGE``, else the code location's (``DAGSTER_CURRENT_IMAGE``), else the run's.

        In a run pod the K8sRunLauncher started, the run's origin records the image its code location
        runs (the chart's one digest). Rendering without any of them shows a placeholder naming the setting.
        """
        if self.k8s_image:
            return self.k8s_image
        if os.environ.get("DAGSTER_CURRENT_IMAGE"):
            return os.environ["DAGSTER_CURRENT_IMAGE"]
        origin = getattr(getattr(context, "dagster_run", None), "job_code_origin", None) if context else None
        run_image = origin.repository_origin.container_image if origin is not None else None
        if run_image:
            return run_image
        if self.dry_run or self.backend == "k8s-local":  # rendered only, or run here from this checkout
            return IMAGE_PLACEHOLDER
        raise Failure(
            description="no workload image: set MLTRAIN_K8S_IMAGE, or run the code location from its image "
            "(the Helm chart sets DAGSTER_CURRENT_IMAGE and records it on every run)",
            allow_retries=False,
        )

    def resources_for(self, profile: WorkloadProfile, step: str = "") -> WorkloadResources:
        """CPU, memory, GPUs, scratch, /dev/shm and timeout of ``step`` launched with ``profile``."""
        try:
            return resolve(profile, step, parse_overrides(self.workload_resources))
        except ValueError as refused:
            raise Failure(description=str(refused), allow_retries=False) from None

    def spark_settings(self, context: AssetExecutionContext | None = None) -> SparkSettings:
        spark = self.spark or SparkConfig()
        settings = spark.settings()
        if settings.master.startswith("k8s://") and self.backend == "k8s":
            # Executors: the workload image, namespace and service account, and a pod template with the
            # workload pods' security context, secret references, placement and scratch.
            account = self.k8s_service_account
            defaults = {
                "spark.kubernetes.container.image": self.image(context),
                "spark.kubernetes.container.image.pullPolicy": self.k8s_image_pull_policy,
                "spark.kubernetes.namespace": self.k8s_namespace,
                **(
                    {
                        "spark.kubernetes.authenticate.driver.serviceAccountName": account,
                        "spark.kubernetes.authenticate.executor.serviceAccountName": account,
                    }
                    if account
                    else {}
                ),
            }
            template = self.pod_template("spark", self.resources_for("spark"), image=self.image(context), executor=True)
            settings = dataclasses.replace(
                settings, conf={**defaults, **settings.conf}, executor_pod_template=executor_pod_template(template)
            )
        return settings

    def mlflow_settings(self, context: AssetExecutionContext | None = None) -> MlflowSettings:
        """The tracking store, and (launched from an asset) the Dagster run and partition to link MLflow runs to."""
        links = {}
        if context is not None:
            links = {
                "dagster_ui_url": self.dagster_ui_url,
                "dagster_run_id": context.run_id,
                "dagster_asset_key": context.asset_key.to_user_string(),
                "dagster_partition_key": str(context.partition_key) if context.has_partition_key else "",
            }
        return MlflowSettings(tracking_uri=self.mlflow_tracking_uri, artifacts_uri=self.mlflow_artifacts_uri, **links)

    def topology(self) -> tuple[int, int]:
        """``(nodes, gpus_per_node)`` for distributed workloads."""
        nodes = _positive_int("MLTRAIN_TRAIN_NODES", self.train_nodes, minimum=1)
        gpus = _positive_int("MLTRAIN_TRAIN_GPUS_PER_NODE", self.train_gpus_per_node, minimum=0)
        return nodes, gpus

    def bind(self, params: WorkloadParams, context: AssetExecutionContext | None = None) -> WorkloadParams:
        """The params with this deployment's runtime settings filled in (Spark, SQL engine, MLflow, topology)."""
        settings: dict[str, Any] = {
            "spark": self.spark_settings(context),
            "mlflow": self.mlflow_settings(context),
            "engine": self.sql_engine,
            "parity": _bool_setting("MLTRAIN_ENGINE_PARITY", self.engine_parity),
        }
        if isinstance(params, DistributedParams):
            nodes, gpus = self.topology()
            settings["nnodes"] = nodes
            if gpus:
                settings.update(nproc_per_node=gpus, device="cuda", backend="nccl")
            else:
                # CPU processes: the same world size however many nodes share it.
                settings["nproc_per_node"] = max(1, params.nproc_per_node // nodes)
        names = {f.name for f in dataclasses.fields(params)}
        return dataclasses.replace(params, **{k: v for k, v in settings.items() if k in names})

    def command(self, params: WorkloadParams) -> list[str]:
        python = self.python_executable or (sys.executable if self.backend == "local" else "python")
        return params.command(python)

    def workload_env(self) -> dict[str, str]:
        """The environment settings every launch passes explicitly, locally and in pods alike."""
        return {name: os.environ[name] for name in WORKLOAD_ENV if os.environ.get(name)}

    # ------------------------------------------------------------------ launching

    def run(
        self,
        context: AssetExecutionContext,
        params: WorkloadParams,
        *,
        timeout_s: float | None = None,
        profile: WorkloadProfile = "default",
    ) -> WorkloadResult:
        """Launch, wait, report; ``timeout_s`` None: the step's configured timeout (``resources_for``)."""
        if self.backend not in BACKENDS:
            raise Failure(
                description=f"MLTRAIN_COMPUTE={self.backend!r} is not a compute backend; use one of {BACKENDS}",
                allow_retries=False,
            )
        if timeout_s is None:
            timeout_s = self.resources_for(profile, _step(context)).timeout_s
        params = self.bind(params, context)
        workload = params.module
        started = time.monotonic()
        if self.dry_run:
            RENDERED.extend(self.manifests(context, params, timeout_s=timeout_s, profile=profile))
            raise DryRun(f"{workload}: rendered, not launched")
        context.log.info(f"launching {workload} on {self.backend} ({profile}), timeout {timeout_s:.0f}s")
        usage: TreeUsage | None = None
        if self.backend == "local":
            messages, usage = self._run_local(context, workload, self.command(params), timeout_s=timeout_s)
        elif self.backend == "k8s-local":
            messages, usage = self._run_k8s_local(context, params, timeout_s=timeout_s, profile=profile)
        else:
            messages = self._run_k8s(context, params, timeout_s=timeout_s, profile=profile)
        summary: dict[str, Any] = {}
        for message in messages:
            if isinstance(message, dict):
                summary.update(message)
        for key, describe, metadata_key in _NO_RETRY_SUMMARIES:
            if key in summary:
                raise Failure(
                    description=describe.format(workload=workload, reason=summary[key]),
                    metadata={metadata_key: MetadataValue.text(summary[key])},
                    allow_retries=False,
                )
        return WorkloadResult(
            summary=summary,
            wall_s=time.monotonic() - started,
            cpu_s=usage.cpu_s if usage else None,
            peak_rss_mb=usage.peak_rss_mb if usage else None,
            measured=usage.measured if usage else K8S_NOT_MEASURED,
        )

    def _run_local(self, context, workload, command, *, timeout_s) -> tuple[list[Any], TreeUsage]:
        with open_pipes_session(
            context=context,
            context_injector=PipesTempFileContextInjector(),
            message_reader=PipesTempFileMessageReader(),
        ) as session:
            launch_env = {
                **os.environ,
                "SPARK_LOCAL_IP": "127.0.0.1",
                **self.workload_env(),
                **session.get_bootstrap_env_vars(),
            }
            returncodes, usage = _wait_all(context, workload, [(command, launch_env)], timeout_s=timeout_s)
        return _checked(workload, returncodes, list(session.get_custom_messages())), usage

    # ------------------------------------------------------------------ Kubernetes objects

    def pod_template(
        self,
        profile: WorkloadProfile,
        resources: WorkloadResources,
        *,
        image: str,
        gpus: int | None = None,
        timeout_s: float | None = None,
        executor: bool = False,
    ) -> PodTemplate:
        """Resources, placement, identity, secrets and volumes of a workload pod (or a Spark executor's)."""
        gpus = resources.gpus if gpus is None else gpus
        selector = _json_setting("MLTRAIN_K8S_NODE_SELECTOR", self.k8s_node_selector, dict)
        tolerations: list = []
        if gpus:
            # GPU nodes are tainted and pooled: only pods that request GPUs go there.
            selector = {
                **selector,
                **_json_setting("MLTRAIN_K8S_TRAINING_NODE_SELECTOR", self.k8s_training_node_selector, dict),
            }
            tolerations = _json_setting("MLTRAIN_K8S_TRAINING_TOLERATIONS", self.k8s_training_tolerations, list)
        spark = self.spark or SparkConfig()
        field_env: dict[str, str] = {}
        if profile == "spark" and spark.runs_driver_in_pod and not executor:
            # The driver is reached at its pod IP, and owns its executors (they die with it) by its pod name.
            field_env = {"SPARK_DRIVER_HOST": "status.podIP", "SPARK_DRIVER_POD_NAME": "metadata.name"}
        elif profile == "training":
            field_env = {"MLTRAIN_POD_IP": "status.podIP"}  # a training node binds its rendezvous to its pod IP only
        return PodTemplate(
            image=image,
            namespace=self.k8s_namespace,
            image_pull_policy=self.k8s_image_pull_policy,
            requests={
                "cpu": resources.cpu,
                "memory": resources.memory,
                "ephemeral-storage": resources.ephemeral_storage,
            },
            limits={"memory": resources.memory, **({"nvidia.com/gpu": str(gpus)} if gpus else {})},
            node_selector=selector,
            tolerations=tolerations,
            service_account=self.k8s_service_account,
            env_secret=self.k8s_env_secret,
            env={} if executor else self.workload_env(),
            field_env=field_env,
            scratch_size=resources.scratch,
            shm_size=resources.shm,
            deadline_s=int(timeout_s if timeout_s is not None else resources.timeout_s),
            labels={"mltrain/profile": profile, **({"mltrain/role": "spark-executor"} if executor else {})},
        )

    def manifests(
        self,
        context: AssetExecutionContext,
        params: WorkloadParams,
        *,
        timeout_s: float,
        profile: WorkloadProfile,
        pipes_env: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """The Kubernetes objects this launch submits (Pipes bootstrap values as placeholders unless given)."""
        # dagster_k8s pulls in the Kubernetes client (~0.4 s): only a k8s backend that renders pays for it.
        from dagster_k8s.pipes import get_pod_name

        distributed = isinstance(params, DistributedParams)
        template = self.pod_template(
            profile,
            self.resources_for(profile, _step(context)),
            image=self.image(context),
            gpus=self.topology()[1] if distributed else None,
            timeout_s=timeout_s,
        )
        pipes_env = pipes_env if pipes_env is not None else dict(PIPES_PLACEHOLDERS)
        partition = str(context.partition_key) if context.has_partition_key else ""
        # Spark's executor pod template: not submitted (the driver reads it from its params), shown and checked.
        spark = getattr(params, "spark", None)
        executors = (
            [spark_executor_object(spark.executor_pod_template, template.namespace)]
            if spark and spark.executor_pod_template
            else []
        )
        if distributed and params.nnodes > 1:
            name = object_name(context.run_id, context.op_def.name, partition)
            params = dataclasses.replace(
                params, node_rank=-1, rdzv_endpoint=rendezvous_endpoint(name, self.rendezvous_port)
            )
            return render_indexed_job(
                template,
                name=name,
                nodes=params.nnodes,
                command=params.command("python"),
                env=pipes_env,
                port=self.rendezvous_port,
            )
        return [
            render_pod(
                template,
                name=get_pod_name(context.run_id, context.op_def.name),
                command=params.command("python"),
                env=pipes_env,
            ),
            *executors,
        ]

    def _run_k8s(self, context, params, *, timeout_s, profile) -> list[Any]:
        if isinstance(params, DistributedParams) and params.nnodes > 1:
            return run_indexed_job(self, context, params, timeout_s=timeout_s, profile=profile)
        from dagster_k8s import PipesK8sClient

        template = self.pod_template(
            profile, self.resources_for(profile, _step(context)), image=self.image(context), timeout_s=timeout_s
        )
        invocation = PipesK8sClient().run(
            context=context,
            image=template.image,
            command=None,  # in args, under the image's entry point, as render_pod has it
            namespace=template.namespace,
            env=template.env,
            base_pod_spec=pod_spec(template, args=params.command("python")),
            base_pod_meta=pod_meta(template),
        )
        return list(invocation.get_custom_messages())

    def _run_k8s_local(self, context, params, *, timeout_s, profile) -> tuple[list[Any], TreeUsage]:
        """Run exactly the rendered objects here: each pod's container as a local process.

        Pod env is resolved the way the kubelet would (downward-API pod IP -> 127.0.0.1, Secret
        references -> this machine's values of the same variables); an Indexed Job runs as one
        process per completion index, with the rendezvous host mapped to 127.0.0.1. Only pod 0
        talks to Dagster (locally through a temp file rather than pod logs).
        """
        objects = self.manifests(context, params, timeout_s=timeout_s, profile=profile, pipes_env={})
        pods = local_pods(objects, python=self.python_executable or sys.executable, port=free_port())
        workload = params.module
        context.log.info(f"k8s-local: {len(pods)} pod(s) from {[o['kind'] for o in objects]}")
        with open_pipes_session(
            context=context,
            context_injector=PipesTempFileContextInjector(),
            message_reader=PipesTempFileMessageReader(),
        ) as session:
            launches = [
                (command, {**os.environ, **env, **(session.get_bootstrap_env_vars() if index == 0 else {})})
                for index, (command, env) in enumerate(pods)
            ]
            returncodes, usage = _wait_all(context, workload, launches, timeout_s=timeout_s)
        return _checked(workload, returncodes, list(session.get_custom_messages())), usage


def _step(context: AssetExecutionContext | None) -> str:
    """The asset a launch is for (per-step resources are keyed by asset name)."""
    try:
        return context.asset_key.to_user_string() if context is not None else ""
    except Exception:  # an op outside an asset (tests' direct invocations)
        return ""


IMAGE_PLACEHOLDER = "<the run's image: set MLTRAIN_K8S_IMAGE or DAGSTER_CURRENT_IMAGE>"

PIPES_PLACEHOLDERS = {
    "DAGSTER_PIPES_CONTEXT": "<set at launch by the Pipes session>",
    "DAGSTER_PIPES_MESSAGES": "<set at launch by the Pipes session>",
}


def local_pods(objects: list[dict[str, Any]], *, python: str, port: int) -> list[tuple[list[str], dict[str, str]]]:
    """``(command, env)`` per pod the objects would start, resolved for this machine."""
    pods = []
    for obj in objects:
        if obj["kind"] == "Pod":
            pods.append((obj["spec"]["containers"][0], None))
        elif obj["kind"] == "Job":
            container = obj["spec"]["template"]["spec"]["containers"][0]
            pods += [(container, index) for index in range(int(obj["spec"]["completions"]))]
    resolved = []
    for container, index in pods:
        command = [python if part == "python" else part for part in workload_command(container)]
        params = command_params(command)
        if params.get("rdzv_endpoint"):
            params["rdzv_endpoint"] = f"127.0.0.1:{port}"  # pod 0's DNS name, on this machine
            command = with_params(command, params)
        env = {"SPARK_LOCAL_IP": "127.0.0.1"}
        for item in container.get("env") or []:
            if item["name"].startswith("DAGSTER_PIPES_"):
                continue
            if "value" in item:
                env[item["name"]] = item["value"]
            elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP":
                env[item["name"]] = "127.0.0.1"
            elif "secretKeyRef" in item.get("valueFrom", {}) and item["name"] in os.environ:
                env[item["name"]] = os.environ[item["name"]]
        if index is not None:
            env[COMPLETION_INDEX_ENV] = str(index)
        resolved.append((command, env))
    return resolved


def _wait_all(
    context, workload: str, launches: list[tuple[list[str], dict[str, str]]], *, timeout_s: float
) -> tuple[list[int], TreeUsage]:
    """Start every process in its own process group; wait for all; on timeout or interrupt kill every group.

    The workloads do not outlive the run worker: each leader is SIGKILLed by the kernel when the
    thread that started it exits (``PR_SET_PDEATHSIG``; with Dagster's in-process executor that is
    the run worker's main thread, which waits here), and a guard process kills their whole groups
    and sessions (a torchrun agent, a Spark JVM) once the run worker is gone (``_RunWorkerGuard``).
    A leader that failed (killed, crashed) has the rest of its group killed too.

    Returns the exit codes and what the launched trees used (CPU seconds, peak memory).
    """
    with _RunWorkerGuard() as guard:
        processes: list[_MeteredPopen] = []
        try:
            for command, env in launches:
                processes.append(
                    _MeteredPopen(command, env=env, start_new_session=True, preexec_fn=_die_with_parent_thread)
                )
                guard.watch(processes[-1].pid)
        except BaseException:
            for process in processes:
                _kill_group(process, grace_s=0)
            raise
        meters = [_TreeMeter(process) for process in processes]
        deadline = time.monotonic() + timeout_s
        poll_s = 0.05  # doubling to 0.5 s: a short workload is still sampled
        try:
            returncodes: list[int | None] = [None] * len(processes)
            while any(code is None for code in returncodes):
                for i, process in enumerate(processes):
                    if returncodes[i] is None:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise subprocess.TimeoutExpired(process.args, timeout_s)
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            returncodes[i] = process.wait(timeout=min(remaining, poll_s))
                poll_s = min(poll_s * 2, 0.5)
                _sample(meters)
                failed = [code for code in returncodes if code not in (None, 0, *REPORTED_EXITS)]
                if failed and len(processes) > 1:
                    break  # one node failed: the others would wait for it at the rendezvous
        except subprocess.TimeoutExpired as timeout:
            for process in processes:
                _kill_group(process)
            raise Failure(
                description=f"{workload} timed out after {timeout_s:.0f}s and was killed", allow_retries=True
            ) from timeout
        except DagsterExecutionInterruptedError:
            for process in processes:
                _kill_group(process, first=signal.SIGINT)
            raise
        for process in processes:
            if process.poll() is None or (process.returncode not in (0, *REPORTED_EXITS) and _group_alive(process.pid)):
                _kill_group(process)  # still running, or what a failed leader left behind
        _settle(meters, until=min(time.monotonic() + SETTLE_S, deadline))
    return [process.returncode for process in processes], TreeUsage.of(meters)


# ------------------------------------------------------------------ workloads die with their run worker

_PR_SET_PDEATHSIG = 1
_LIBC_PRCTL = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        _LIBC_PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it


def _die_with_parent_thread() -> None:
    """``preexec_fn``: in the child, before exec, ask the kernel to SIGKILL it when its parent thread exits.

    Only an already-resolved C call between fork and exec (no imports, no locks). A session leader
    is no exception; the kernel sends the signal when the thread that forked it exits, here the
    one waiting in ``_wait_all``, so in practice when the run worker dies.
    """
    if _LIBC_PRCTL is not None:
        _LIBC_PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# The guard: reads one process-group id per line from the run worker; on "done" it exits; on EOF
# without "done" (the run worker died: the kernel closed its end of the pipe) it SIGKILLs those
# groups and every process left in their sessions. Plain stdlib, no site: it starts in ~20 ms.
_GUARD = r"""
import os, signal, sys
leaders = []
while True:
    line = sys.stdin.buffer.readline()
    if not line:
        break
    if line.strip() == b"done":
        sys.exit(0)
    leaders.append(int(line))
for pgid in leaders:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
    if entry.isdigit():
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                stat = f.read()
            if int(stat[stat.rindex(b")") + 2 :].split()[3]) in leaders:
                os.kill(int(entry), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass
"""


class _RunWorkerGuard:
    """A small process, in a session of its own, that kills the workloads when the run worker dies.

    The run worker holds the only write end of the guard's stdin: when it dies (SIGKILL included)
    the kernel closes it and the guard sees EOF. A run worker that finishes normally says ``done``
    first. If the guard cannot start, the workloads still die with the run worker through
    ``PR_SET_PDEATHSIG`` (the leaders only).
    """

    def __init__(self):
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> _RunWorkerGuard:
        with contextlib.suppress(OSError):
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _GUARD],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # not in the run worker's group: a kill of that group does not reach it
            )
        return self

    def watch(self, pgid: int) -> None:
        self._say(f"{pgid}\n".encode())

    def _say(self, data: bytes) -> None:
        if self.process is None or self.process.stdin is None:
            return
        try:
            self.process.stdin.write(data)
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # the guard died (someone killed it): the leaders still die with the run worker

    def __exit__(self, *exc) -> None:
        if self.process is None:
            return
        self._say(b"done\n")
        with contextlib.suppress(BrokenPipeError, OSError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ------------------------------------------------------------------ what a launch cost

_MAXRSS_UNIT_KB = 1 / 1024 if sys.platform == "darwin" else 1  # ru_maxrss: bytes on macOS, KiB on Linux


@dataclass(frozen=True)
class TreeUsage:
    """CPU seconds and peak resident memory of the process trees one launch started."""

    cpu_s: float
    peak_rss_mb: float
    measured: str

    @classmethod
    def of(cls, meters: list[_TreeMeter]) -> TreeUsage:
        sampled = all(meter.sampled for meter in meters)
        return cls(
            cpu_s=round(sum(meter.cpu_s() for meter in meters), 3),
            peak_rss_mb=round(max((meter.peak_kb() for meter in meters), default=0) / 1024, 1),
            measured="wait4 + /proc" if sampled else "wait4",
        )


class _MeteredPopen(subprocess.Popen):
    """A ``Popen`` that keeps the kernel's resource usage of the process when it reaps it (``wait4``).

    That usage includes every descendant reaped below it (a torchrun worker, a ``subprocess.run``),
    and its ``ru_maxrss`` is the largest of their peak resident sets. Only the reaping call differs
    from ``Popen`` (CPython's POSIX ``_try_wait``), so waiting, timeouts and interrupts behave as before.
    """

    rusage: Any = None

    def _try_wait(self, wait_flags):
        try:
            pid, status, rusage = os.wait4(self.pid, wait_flags)
        except ChildProcessError:  # as Popen: SIGCHLD ignored, the status is lost
            return (self.pid, 0)
        if pid == self.pid:
            self.rusage = rusage
        return (pid, status)


class _TreeMeter:
    """What one launched process tree used: ``wait4`` for the leader, ``/proc`` for what nobody reaps.

    CPU: ``wait4`` misses a descendant no process of the tree waits for: a local Spark JVM that
    outlives its Python driver, a grandchild whose parent died first. Such a process is re-parented
    outside the tree; each launch is its own session, so ``/proc`` finds it by session id and its
    CPU (with that of the children it reaped) at its last sighting is added.

    Memory: the largest per-process high-water mark (``VmHWM``) or sum of the tree's resident sets
    seen while sampling (every ~0.5 s). The leader's ``ru_maxrss`` counts only when it exceeds
    the run worker's own peak: Linux carries the parent's peak into a forked child's ``ru_maxrss``
    until ``exec``, so below that it may be the run worker's memory, not the workload's. Without
    ``/proc`` (macOS) only the ``wait4`` figures count.
    """

    def __init__(self, process: _MeteredPopen):
        self.process = process
        self.sid = process.pid  # start_new_session: the leader's pid is the session id
        # The run worker's peak so far: the most a forked child's ru_maxrss can carry over from it.
        self.parent_maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_UNIT_KB
        self.orphans: dict[int, float] = {}  # pid -> CPU seconds at its last sighting outside the tree
        self.leader_cpu = 0.0  # the leader's own + reaped children's CPU at its last sighting
        self.hwm_kb = 0
        self.tree_rss_kb = 0
        self.live = True  # some process of the session still runs
        self.sampled = False

    def observe(self, members: dict[int, _Proc]) -> None:
        self.sampled = True
        running = {pid for pid, proc in members.items() if proc.state not in ("Z", "X")}
        self.live = bool(running)
        self.tree_rss_kb = max(self.tree_rss_kb, sum(members[pid].rss_kb for pid in running))
        for pid, proc in members.items():
            self.hwm_kb = max(self.hwm_kb, proc.hwm_kb)
            if pid == self.sid:
                self.leader_cpu = proc.cpu_s
            elif proc.ppid not in running or pid in self.orphans:
                # Its parent is gone: nobody in the tree will reap it, wait4 will not count it.
                self.orphans[pid] = proc.cpu_s

    def cpu_s(self) -> float:
        usage = self.process.rusage
        leader = usage.ru_utime + usage.ru_stime if usage is not None else self.leader_cpu
        return leader + sum(self.orphans.values())

    def peak_kb(self) -> float:
        usage = self.process.rusage
        leader = usage.ru_maxrss * _MAXRSS_UNIT_KB if usage is not None else 0
        if leader <= self.parent_maxrss_kb:
            leader = 0  # possibly the run worker's peak carried over by fork, not the workload's
        return max(leader, self.hwm_kb, self.tree_rss_kb)


@dataclass(frozen=True)
class _Proc:
    ppid: int
    state: str
    cpu_s: float  # own user + system, plus that of the children it reaped
    rss_kb: int
    hwm_kb: int


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_KB = (os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096) // 1024


def _sample(meters: list[_TreeMeter]) -> None:
    """One pass over ``/proc``: each meter sees the processes of its session."""
    sessions = _sessions({meter.sid for meter in meters if meter.live})
    if sessions is None:
        return
    for meter in meters:
        if meter.live:
            meter.observe(sessions.get(meter.sid, {}))


def _settle(meters: list[_TreeMeter], until: float) -> None:
    """Keep sampling while processes a finished leader left behind still run (bounded by ``until``)."""
    _sample(meters)
    while any(meter.live and meter.sampled for meter in meters) and time.monotonic() < until:
        time.sleep(0.1)
        _sample(meters)


def _sessions(sids: set[int]) -> dict[int, dict[int, _Proc]] | None:
    """``{sid: {pid: _Proc}}`` for the processes of these sessions; ``None`` without ``/proc``."""
    if not sids:
        return {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    found: dict[int, dict[int, _Proc]] = {}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
            # After "(comm)": state ppid pgrp session ... utime(14) stime cutime cstime ... rss(24)
            fields = stat[stat.rindex(b")") + 2 :].split()
            sid = int(fields[3])
            if sid not in sids:
                continue
            hwm_kb = 0
            with contextlib.suppress(OSError), open(f"/proc/{entry}/status", "rb") as handle:
                for line in handle:
                    if line.startswith(b"VmHWM:"):
                        hwm_kb = int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
        ticks = sum(int(value) for value in fields[11:15])
        found.setdefault(sid, {})[int(entry)] = _Proc(
            ppid=int(fields[1]),
            state=fields[0].decode(),
            cpu_s=ticks / _CLOCK_TICKS,
            rss_kb=int(fields[21]) * _PAGE_KB,
            hwm_kb=hwm_kb,
        )
    return found


def _checked(workload: str, returncodes: list[int], messages: list[Any]) -> list[Any]:
    if returncodes[0] in REPORTED_EXITS:
        return messages
    failed = {i: code for i, code in enumerate(returncodes) if code != 0}
    if failed:
        where = "" if len(returncodes) == 1 else f" (node exit codes {failed})"
        code = returncodes[0] if returncodes[0] != 0 else next(iter(failed.values()))
        raise Failure(description=f"{workload} failed with exit code {code}{where}", allow_retries=True)
    return messages


def _positive_int(name: str, value: str | int, *, minimum: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < minimum:
        raise Failure(description=f"{name}={value!r}: expected an integer >= {minimum}", allow_retries=False)
    return number


def _bool_setting(name: str, value: str | bool) -> bool:
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise Failure(description=f"{name}={value!r}: expected true or false", allow_retries=False)
    return text == "true"


def _json_setting(name: str, value: str, kind: type) -> Any:
    try:
        parsed = json.loads(value or ("{}" if kind is dict else "[]"))
    except json.JSONDecodeError as exc:
        raise Failure(description=f"{name} is not valid JSON ({exc}): {value!r}", allow_retries=False) from None
    if not isinstance(parsed, kind):
        raise Failure(description=f"{name} must be a JSON {kind.__name__}, got {value!r}", allow_retries=False)
    return parsed


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
