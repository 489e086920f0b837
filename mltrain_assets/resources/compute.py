"""Where data-plane workloads run, as configuration: the typed settings and the one launch path.

Assets call ``ComputeBackend.run`` with a workload's typed params; which launcher runs it
(``mltrain_assets/launch``: a subprocess, the rendered pods here, a Pod or an Indexed Job on a
cluster, or render-only), and with which Spark master, SQL engine and MLflow store, is
configuration (``MLTRAIN_*``), never asset code. The backend binds those service settings into
the params' declared ``service`` fields (``bind``), renders the Kubernetes objects, opens the
Pipes session and hands the launcher both.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    AssetExecutionContext,
    ConfigurableResource,
    Failure,
    MetadataValue,
    PipesEnvContextInjector,
    PipesTempFileContextInjector,
    PipesTempFileMessageReader,
    open_pipes_session,
)

from mltrain_assets.launch import (
    IndexedJob,
    KubernetesHere,
    KubernetesPod,
    Launch,
    LaunchFailed,
    LaunchTimeout,
    LocalProcess,
    RenderOnly,
)
from mltrain_assets.launch.protocol import PodCannotStart
from mltrain_assets.loopback import free_port
from mltrain_assets.resources.k8s import (
    executor_pod_template,
)
from mltrain_assets.resources.spark import SparkConfig
from mltrain_assets.resources.workload_objects import IMAGE_PLACEHOLDER, WorkloadObjects, step_of
from mltrain_assets.resources.workload_resources import WorkloadProfile, WorkloadResources, parse_overrides, resolve
from mltrain_assets.workloads.common.params import (
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

BACKENDS = ("local", "k8s", "k8s-local")
# What a workload's environment needs besides its params: object-store endpoints and region.
# Credentials come from the pod's Secret (MLTRAIN_K8S_ENV_SECRET) or the machine's own environment.
# MLTRAIN_PIPELINES: a workload in a pod resolves the landing datasets of the same registered pipelines.
WORKLOAD_ENV = ("MLTRAIN_PIPELINES", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
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
    # Node index -> pods it took, where the cluster replaced one (evicted, preempted); the seconds they had run.
    attempts: dict[int, int] = field(default_factory=dict)
    seconds_lost: float = 0.0

    @property
    def elapsed_s(self) -> float:
        return self.wall_s


class DryRun(Failure):
    """Stops the step where it would launch (never retried), carrying what it would submit.

    ``mltrain manifests`` reads the objects from the step's failure metadata (``RENDERED_KEY``).
    """

    def __init__(self, description: str, objects: list[dict[str, Any]]):
        super().__init__(
            description=description,
            metadata={RENDERED_KEY: MetadataValue.json(objects)},
            allow_retries=False,
        )
        self.objects = objects

    def __reduce__(self):
        return (type(self), (self.description, self.objects))


RENDERED_KEY = "rendered_objects"


class ComputeBackend(ConfigurableResource, WorkloadObjects):
    """Launches a workload with its params, waits (polling), and returns its report.

    ``backend="local"`` runs ``python -m <module> --params JSON`` as a subprocess of the run
    worker; ``backend="k8s"`` submits the same command as a Pod or, for a distributed workload
    over several nodes, as an Indexed Job + headless Service;
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
    # A Spark driver with a k8s:// master creates its executors: only it gets a token, and this account ("": the above).
    k8s_spark_service_account: str = ""
    k8s_image_pull_policy: str = "IfNotPresent"
    # CPU, memory, GPUs, scratch, /dev/shm and timeout per profile and step (resources/workload_resources.py).
    workload_resources: str = "{}"
    k8s_node_selector: str = "{}"  # JSON object, every workload pod
    k8s_training_node_selector: str = "{}"  # JSON object, pods that request GPUs (a GPU node pool)
    k8s_training_tolerations: str = "[]"  # JSON list, pods that request GPUs (e.g. nvidia.com/gpu taints)
    k8s_env_secret: str = ""  # Secret whose keys become env vars of every workload pod
    k8s_unschedulable_timeout_s: str = "300"  # a pod unschedulable this long fails its step (FailedScheduling)
    dry_run: bool = False  # render what would be submitted (the render-only launcher) and launch nothing

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
            "k8s_spark_service_account": EnvVar("MLTRAIN_K8S_SPARK_SERVICE_ACCOUNT"),
            "k8s_env_secret": EnvVar("MLTRAIN_K8S_ENV_SECRET"),
            "k8s_unschedulable_timeout_s": EnvVar("MLTRAIN_K8S_UNSCHEDULABLE_TIMEOUT_S"),
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
                        "spark.kubernetes.authenticate.driver.serviceAccountName": self.k8s_spark_service_account
                        or account,
                        "spark.kubernetes.authenticate.executor.serviceAccountName": account,
                    }
                    if account
                    else {}
                ),
            }
            template = self.pod_template(
                "spark",
                self.resources_for("spark"),
                image=self.image(context),
                executor=True,
                run_id=context.run_id if context is not None else "",
            )
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
        """The params with this deployment's settings in the fields that declare them (``service(binds=...)``),
        and, for a distributed workload, its topology. Nothing is matched by field name."""
        services = {
            "spark": lambda: self.spark_settings(context),
            "mlflow": lambda: self.mlflow_settings(context),
            "sql_engine": lambda: self.sql_engine,
            "engine_parity": lambda: _bool_setting("MLTRAIN_ENGINE_PARITY", self.engine_parity),
        }
        settings: dict[str, Any] = {
            f.name: services[f.metadata["binds"]]() for f in dataclasses.fields(params) if "binds" in f.metadata
        }
        if isinstance(params, DistributedParams):
            nodes, gpus = self.topology()
            settings["nnodes"] = nodes
            if gpus:
                settings.update(nproc_per_node=gpus, device="cuda", backend="nccl")
            else:
                # CPU processes: the same world size however many nodes share it.
                settings["nproc_per_node"] = max(1, params.nproc_per_node // nodes)
        return dataclasses.replace(params, **settings)

    def workload_env(self) -> dict[str, str]:
        """The environment settings every launch passes explicitly, locally and in pods alike."""
        return {name: os.environ[name] for name in WORKLOAD_ENV if os.environ.get(name)}

    # ------------------------------------------------------------------ launching

    def launcher(self, follow_logs=None, distributed: bool = False):
        """The launcher this deployment uses (``launch/``): chosen by configuration, never by an asset."""
        if self.dry_run:
            return RenderOnly()
        if self.backend == "local":
            return LocalProcess(python=self.python_executable, ok_exits=(0, *REPORTED_EXITS))
        if self.backend == "k8s-local":
            return KubernetesHere(port=free_port(), python=self.python_executable, ok_exits=(0, *REPORTED_EXITS))
        from mltrain_assets.resources.k8s_cluster import DagsterCluster

        timeout = _positive_int("MLTRAIN_K8S_UNSCHEDULABLE_TIMEOUT_S", self.k8s_unschedulable_timeout_s, minimum=0)
        cluster = DagsterCluster(unschedulable_timeout_s=timeout)
        return (IndexedJob if distributed else KubernetesPod)(client=cluster, follow_logs=follow_logs)

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
            timeout_s = self.resources_for(profile, step_of(context)).timeout_s
        params = self.bind(params, context)
        workload = params.module
        started = time.monotonic()
        if self.dry_run:
            raise DryRun(
                f"{workload}: rendered, not launched",
                self.manifests(context, params, timeout_s=timeout_s, profile=profile),
            )
        context.log.info(f"launching {workload} on {self.backend} ({profile}), timeout {timeout_s:.0f}s")
        on_cluster = self.backend == "k8s"
        reader = _pod_logs_reader() if on_cluster else PipesTempFileMessageReader()
        injector = PipesEnvContextInjector() if on_cluster else PipesTempFileContextInjector()
        distributed = isinstance(params, DistributedParams) and params.nnodes > 1
        with open_pipes_session(context=context, context_injector=injector, message_reader=reader) as session:
            bootstrap = session.get_bootstrap_env_vars()
            # A pod gets the Pipes bootstrap rendered into its env; local processes (k8s-local's pod 0) get it here.
            objects = (
                ()
                if self.backend == "local"
                else tuple(
                    self.manifests(
                        context,
                        params,
                        timeout_s=timeout_s,
                        profile=profile,
                        pipes_env=dict(bootstrap) if on_cluster else {},
                    )
                )
            )
            if self.backend == "k8s-local":
                context.log.info(f"k8s-local: pods from {[o['kind'] for o in objects]}")
            launch = Launch(
                workload=workload,
                command=params.command("python"),
                timeout_s=timeout_s,
                objects=objects,
                env={} if on_cluster else {**self.workload_env(), **bootstrap},
            )

            def follow_logs(namespace: str, pod: str) -> None:  # pod logs carry the Pipes messages on a cluster
                assert not isinstance(reader, PipesTempFileMessageReader)  # only the k8s launchers follow pod logs
                # Called once the pod started (and again for a pod the Job started in place of an evicted one).
                core_api = launcher.client.core_api
                reader.consume_pod_logs(context=context, core_api=core_api, namespace=namespace, pod_name=pod)

            launcher = self.launcher(follow_logs=follow_logs, distributed=distributed)
            try:
                result = launcher.launch(launch)
            except LaunchTimeout as timeout:
                raise Failure(
                    description=f"{workload} timed out after {timeout_s:.0f}s and was killed", allow_retries=True
                ) from timeout
            except PodCannotStart as refused:  # an unschedulable request or a missing Secret: not fixed by a retry
                raise Failure(
                    description=f"{workload}: {refused}",
                    metadata={"pod_cannot_start": MetadataValue.text(refused.reason), "pod": refused.pod},
                    allow_retries=refused.retryable,
                ) from refused
            except LaunchFailed as failed:
                raise Failure(description=str(failed), allow_retries=True) from failed
        messages = _checked(workload, result.returncodes, list(session.get_custom_messages()))
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
        usage = result.usage
        if result.attempts:
            context.log.warning(
                f"{workload}: pods replaced by the cluster (attempts per node {result.attempts}, "
                f"{result.seconds_lost:.0f}s of work redone): {'; '.join(result.disruptions)}"
            )
        return WorkloadResult(
            summary=summary,
            wall_s=time.monotonic() - started,
            cpu_s=usage.cpu_s if usage else None,
            peak_rss_mb=usage.peak_rss_mb if usage else None,
            measured=usage.measured if usage else K8S_NOT_MEASURED,
            attempts=dict(result.attempts),
            seconds_lost=result.seconds_lost,
        )


def _pod_logs_reader():
    # dagster_k8s pulls in the Kubernetes client (~0.4 s): only a k8s launch pays for it.
    from dagster_k8s.pipes import PipesK8sPodLogsMessageReader

    return PipesK8sPodLogsMessageReader()


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
