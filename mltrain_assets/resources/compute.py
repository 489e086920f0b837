"""Where data-plane workloads run, as configuration: one compute resource per deployment, one launch path.

Assets call ``Compute.run`` with a workload's typed params; which deployment runs it is the
resource's class, chosen once by ``MLTRAIN_COMPUTE`` (``Compute.from_settings``): ``LocalCompute``
(a subprocess), ``KubernetesHereCompute`` (the rendered pods, here), ``KubernetesCompute`` (a Pod
or an Indexed Job on a cluster), or ``RenderOnlyCompute`` (``mltrain manifests``), all in
``resources/deployments.py``. The launch path is the same for each: bind the deployment's service
settings into the params' declared ``service`` fields (``bind``), plan the launch (the objects to
submit, the environment), open the Pipes session the deployment talks through, launch with its
launcher (``mltrain_assets/launch``), report. Each class supplies its Pipes channel (``pipes``), the
objects it submits or runs (``launch_objects``), the launch's environment (``launch_env``) and its
launcher; this base holds what every deployment shares. The Pipes parts are the resources', not the
launchers': ``launch/`` imports no Dagster.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any, ClassVar

from dagster import AssetExecutionContext, ConfigurableResource, Failure, open_pipes_session

from mltrain_assets.launch import Launch, Launcher
from mltrain_assets.launch.workload_resources import WorkloadProfile, WorkloadResources, parse_overrides, resolve
from mltrain_assets.resources.spark import SparkConfig
from mltrain_assets.resources.workload_result import WorkloadResult, launched, reported
from mltrain_assets.workloads.common.params import DistributedParams, MlflowSettings, WorkloadParams
from mltrain_assets.workloads.common.spark import SparkSettings

if TYPE_CHECKING:
    from dagster import PipesContextInjector, PipesMessageReader

__all__ = ["Compute", "LaunchRequest", "WorkloadProfile", "WorkloadResult", "step_of"]

COMPUTE_ENV = "MLTRAIN_COMPUTE"
# What a workload's environment needs besides its params: object-store endpoints and region.
# Credentials come from the pod's Secret (MLTRAIN_K8S_ENV_SECRET) or the machine's own environment.
# MLTRAIN_PIPELINES: a workload in a pod resolves the landing datasets of the same registered pipelines.
WORKLOAD_ENV = ("MLTRAIN_PIPELINES", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


def step_of(context: AssetExecutionContext | None) -> str:
    """The asset a launch is for (``MLTRAIN_WORKLOAD_RESOURCES`` may override a step by asset name)."""
    try:
        return context.asset_key.to_user_string() if context is not None else ""
    except Exception:  # an op outside an asset (tests' direct invocations)
        return ""


class Compute(ConfigurableResource):
    """Launches a workload with its params, waits, and returns its report: the settings every deployment shares.

    Not used itself: ``Compute.from_settings()`` returns the deployment ``MLTRAIN_COMPUTE`` names, and assets
    annotate ``compute: Compute`` whichever it is.
    """

    deployment: ClassVar[str] = ""  # the MLTRAIN_COMPUTE value that selects the class
    # Whether a launch only renders (``mltrain manifests``): a version already committed is rendered again.
    renders_only: ClassVar[bool] = False

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
    # CPU, memory, GPUs, scratch, /dev/shm and timeout per profile and step (launch/workload_resources.py).
    workload_resources: str = "{}"

    # ------------------------------------------------------------------ configuration

    @classmethod
    def from_settings(cls, **overrides: Any) -> Compute:
        """The deployment configured by the ``MLTRAIN_*`` settings (as ``EnvVar``s, shown in the UI).

        On ``Compute`` itself: the class ``MLTRAIN_COMPUTE`` names (``local``, ``k8s``, ``k8s-local``).
        """
        if cls is Compute:
            from mltrain_assets.resources.deployments import deployment_class

            return deployment_class().from_settings(**overrides)
        return cls(**{**cls.settings(), **overrides})

    @classmethod
    def settings(cls) -> dict[str, Any]:
        """Field -> the ``EnvVar`` it is read from (each deployment adds its own)."""
        from dagster import EnvVar

        return {
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
            "workload_resources": EnvVar("MLTRAIN_WORKLOAD_RESOURCES"),
        }

    # ------------------------------------------------------------------ settings

    def resources_for(
        self, profile: WorkloadProfile, step: str = "", workload: WorkloadParams | None = None
    ) -> WorkloadResources:
        """CPU, memory, GPUs, scratch, /dev/shm and timeout of ``step`` running ``workload`` with ``profile``."""
        declared = workload.resources if workload is not None else None
        try:
            return resolve(
                profile,
                step,
                parse_overrides(self.workload_resources),
                declared=declared,
                declared_by=workload.module if workload is not None else "",
            )
        except ValueError as refused:
            raise Failure(description=str(refused), allow_retries=False) from None

    def spark_settings(self, context: AssetExecutionContext | None = None) -> SparkSettings:
        return (self.spark or SparkConfig()).settings()

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
        nodes = positive_int("MLTRAIN_TRAIN_NODES", self.train_nodes, minimum=1)
        gpus = positive_int("MLTRAIN_TRAIN_GPUS_PER_NODE", self.train_gpus_per_node, minimum=0)
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

    def run(
        self,
        context: AssetExecutionContext,
        params: WorkloadParams,
        *,
        timeout_s: float | None = None,
        profile: WorkloadProfile = "default",
    ) -> WorkloadResult:
        """Bind, plan, launch, wait, report; ``timeout_s`` None: the step's configured timeout (``resources_for``)."""
        params = self.bind(params, context)
        if timeout_s is None:
            timeout_s = self.resources_for(profile, step_of(context), params).timeout_s
        return self.launch(LaunchRequest(context, params, timeout_s, profile))

    def launch(self, request: LaunchRequest) -> WorkloadResult:
        """The bound params launched in a Pipes session through this deployment's channel and launcher."""
        workload, started = request.params.module, time.monotonic()
        request.context.log.info(
            f"launching {workload} on {self.deployment} ({request.profile}), timeout {request.timeout_s:.0f}s"
        )
        injector, reader = self.pipes()
        with open_pipes_session(context=request.context, context_injector=injector, message_reader=reader) as session:
            bootstrap = dict(session.get_bootstrap_env_vars())
            plan = request.plan(self.launch_objects(request, bootstrap), self.launch_env(bootstrap))
            result = launched(self.launcher(request, reader), plan)
        return reported(request.context, workload, result, list(session.get_custom_messages()), started)

    # What a deployment supplies. The defaults are a process on this machine's: it shares the run worker's file
    # system (Pipes through temp files) and gets the Pipes bootstrap in its environment.

    def pipes(self) -> tuple[PipesContextInjector, PipesMessageReader]:
        """How the workload gets its Pipes context and sends its messages on this deployment."""
        from dagster import PipesTempFileContextInjector, PipesTempFileMessageReader

        return PipesTempFileContextInjector(), PipesTempFileMessageReader()

    def launch_objects(self, request: LaunchRequest, bootstrap: dict[str, str]) -> list[dict[str, Any]]:
        """The Kubernetes objects the launcher submits or runs (none: a plain process)."""
        return []

    def launch_env(self, bootstrap: dict[str, str]) -> dict[str, str]:
        """The environment the launched processes get besides the objects' own."""
        return {**self.workload_env(), **bootstrap}

    def launcher(self, request: LaunchRequest, reader: PipesMessageReader) -> Launcher:
        """The launcher (``launch/``) this deployment uses: chosen by configuration, never by an asset."""
        raise NotImplementedError(f"{type(self).__name__} is not a deployment: use Compute.from_settings()")


@dataclasses.dataclass(frozen=True)
class LaunchRequest:
    """One launch of a step: where from (``context``), the bound params, its timeout and resource profile."""

    context: AssetExecutionContext
    params: WorkloadParams
    timeout_s: float
    profile: WorkloadProfile

    @property
    def distributed(self) -> bool:
        """Several nodes: an Indexed Job rather than one Pod."""
        return isinstance(self.params, DistributedParams) and self.params.nnodes > 1

    def plan(self, objects: list[dict[str, Any]], env: dict[str, str] | None = None) -> Launch:
        """What the launcher gets: the command, the objects it submits or runs, the extra environment."""
        command = self.params.command("python")
        return Launch(self.params.module, command, self.timeout_s, objects=tuple(objects), env=env or {})


def positive_int(name: str, value: str | int, *, minimum: int) -> int:
    """A whole-number setting, or a step failure naming it and its value."""
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
