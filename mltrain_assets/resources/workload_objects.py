"""The Kubernetes objects of a workload launch, from the compute resource's settings.

A mixin of ``ComputeBackend``: the pod template of a profile (resources, placement, identity,
secrets, scratch, ``/dev/shm``), the Spark executor template, and the objects one launch submits
(a Pod, or a headless Service + Indexed Job). ``mltrain manifests`` prints them; the ``k8s``
launchers submit them; ``k8s-local`` runs them here.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Any

from dagster import AssetExecutionContext, Failure

from mltrain_assets.resources.credentials import CredentialInSpec, credential_findings, pod_safe_tracking_uri
from mltrain_assets.resources.k8s import (
    RUN_ID_LABEL,
    PodTemplate,
    object_name,
    render_indexed_job,
    render_pod,
    rendezvous_endpoint,
    spark_executor_object,
)
from mltrain_assets.resources.spark import SparkConfig
from mltrain_assets.resources.workload_resources import WorkloadProfile, WorkloadResources
from mltrain_assets.workloads.common.params import DistributedParams, MlflowSettings, WorkloadParams

IMAGE_PLACEHOLDER = "<the run's image: set MLTRAIN_K8S_IMAGE or DAGSTER_CURRENT_IMAGE>"

PIPES_PLACEHOLDERS = {
    "DAGSTER_PIPES_CONTEXT": "<set at launch by the Pipes session>",
    "DAGSTER_PIPES_MESSAGES": "<set at launch by the Pipes session>",
}

# Set in the run pod from the downward API (helm-values runK8sConfig): the workload objects it creates are owned by it.
RUN_POD_NAME_ENV = "MLTRAIN_RUN_POD_NAME"
RUN_POD_UID_ENV = "MLTRAIN_RUN_POD_UID"


def step_of(context: AssetExecutionContext | None) -> str:
    """The asset a launch is for (per-step resources are keyed by asset name)."""
    try:
        return context.asset_key.to_user_string() if context is not None else ""
    except Exception:  # an op outside an asset (tests' direct invocations)
        return ""


class WorkloadObjects:
    """Rendering for ``ComputeBackend`` (which provides the ``k8s_*`` settings, ``spark`` and the helpers used here)."""

    if TYPE_CHECKING:  # what ComputeBackend provides (declared for the type checker only, not as fields)
        spark: SparkConfig | None
        rendezvous_port: int
        k8s_namespace: str
        k8s_service_account: str
        k8s_spark_service_account: str
        k8s_image_pull_policy: str
        k8s_node_selector: str
        k8s_training_node_selector: str
        k8s_training_tolerations: str
        k8s_env_secret: str

        def image(self, context: AssetExecutionContext | None = None) -> str: ...
        def resources_for(self, profile: WorkloadProfile, step: str = "") -> WorkloadResources: ...
        def topology(self) -> tuple[int, int]: ...
        def workload_env(self) -> dict[str, str]: ...

    def pod_template(
        self,
        profile: WorkloadProfile,
        resources: WorkloadResources,
        *,
        image: str,
        gpus: int | None = None,
        timeout_s: float | None = None,
        executor: bool = False,
        run_id: str = "",
    ) -> PodTemplate:
        """Resources, placement, identity, secrets and volumes of a workload pod (or a Spark executor's).

        ``run_id`` labels it (``dagster/run-id``); launched from a run pod, the pod is its owner (not executors:
        Spark makes its driver their owner). Only a Spark driver with a k8s:// master gets a service-account
        token, and its own account (``MLTRAIN_K8S_SPARK_SERVICE_ACCOUNT``): it creates its executors.
        """
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
        resource_env: dict[str, str] = {}
        driver = profile == "spark" and spark.master.startswith("k8s://") and not executor
        if profile == "spark" and spark.runs_driver_in_pod and not executor:
            # The driver is reached at its pod IP, and owns its executors (they die with it) by its pod name.
            field_env = {"SPARK_DRIVER_HOST": "status.podIP", "SPARK_DRIVER_POD_NAME": "metadata.name"}
        elif profile == "training":
            field_env = {"MLTRAIN_POD_IP": "status.podIP"}  # a training node binds its rendezvous to its pod IP only
            # Its workers' threads follow the pod's CPU request, not the node's cores (os.cpu_count sees the host).
            resource_env = {"MLTRAIN_NODE_CPUS": "requests.cpu"}
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
            service_account=(self.k8s_spark_service_account or self.k8s_service_account)
            if driver
            else self.k8s_service_account,
            api_access=driver,
            env_secret=self.k8s_env_secret,
            env={} if executor else self.workload_env(),
            field_env=field_env,
            resource_env=resource_env,
            scratch_size=resources.scratch,
            shm_size=resources.shm,
            deadline_s=int(timeout_s if timeout_s is not None else resources.timeout_s),
            labels={
                "mltrain/profile": profile,
                **({"mltrain/role": "spark-executor"} if executor else {}),
                **({RUN_ID_LABEL: run_id} if run_id else {}),
            },
            owner_pod="" if executor else os.environ.get(RUN_POD_NAME_ENV, ""),
            owner_uid="" if executor else os.environ.get(RUN_POD_UID_ENV, ""),
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
            self.resources_for(profile, step_of(context)),
            image=self.image(context),
            gpus=self.topology()[1] if distributed else None,
            timeout_s=timeout_s,
            run_id=context.run_id,
        )
        params = self._without_credentials(params, template.env_secret)
        pipes_env = pipes_env if pipes_env is not None else dict(PIPES_PLACEHOLDERS)
        partition = str(context.partition_key) if context.has_partition_key else ""
        # Spark's executor pod template: not submitted (the driver reads it from its params), shown and checked.
        spark = getattr(params, "spark", None)
        executors = (
            [spark_executor_object(spark.executor_pod_template, template.namespace)]
            if spark and spark.executor_pod_template
            else []
        )
        if isinstance(params, DistributedParams) and params.nnodes > 1:
            name = object_name(context.run_id, context.op_def.name, partition)
            params = dataclasses.replace(
                params, node_rank=-1, rdzv_endpoint=rendezvous_endpoint(name, self.rendezvous_port)
            )
            return _refuse_credentials(
                render_indexed_job(
                    template,
                    name=name,
                    nodes=params.nnodes,
                    command=params.command("python"),
                    env=pipes_env,
                    port=self.rendezvous_port,
                )
            )
        return _refuse_credentials(
            [
                render_pod(
                    template,
                    name=get_pod_name(context.run_id, context.op_def.name),
                    command=params.command("python"),
                    env=pipes_env,
                ),
                *executors,
            ]
        )

    @staticmethod
    def _without_credentials(params: WorkloadParams, env_secret: str) -> WorkloadParams:
        """The params with each MLflow tracking URI's password left to the pod's Secret (``pod_safe_tracking_uri``)."""
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(params):
            value = getattr(params, f.name)
            if isinstance(value, MlflowSettings) and value.tracking_uri:
                try:
                    uri = pod_safe_tracking_uri(value.tracking_uri, env_secret)
                except CredentialInSpec as refused:
                    raise Failure(description=str(refused), allow_retries=False) from None
                changes[f.name] = dataclasses.replace(value, tracking_uri=uri)
        return dataclasses.replace(params, **changes) if changes else params


def _refuse_credentials(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Never submit (nor print) an object carrying a credential-shaped value: anyone who can read pods would see it."""
    findings = [finding for obj in objects for finding in credential_findings(obj)]
    if findings:
        raise Failure(
            description="refusing to render a credential into a pod spec (pod specs are readable by anyone who may "
            "list pods): " + "; ".join(findings) + ". Put credentials in the Secret named by MLTRAIN_K8S_ENV_SECRET "
            "(its keys become the pods' env) instead of in settings that are rendered (MLTRAIN_SPARK_CONF, URIs).",
            allow_retries=False,
        )
    return objects


def _json_setting(name: str, value: str, kind: type) -> Any:
    try:
        parsed = json.loads(value or ("{}" if kind is dict else "[]"))
    except json.JSONDecodeError as exc:
        raise Failure(description=f"{name} is not valid JSON ({exc}): {value!r}", allow_retries=False) from None
    if not isinstance(parsed, kind):
        raise Failure(description=f"{name} must be a JSON {kind.__name__}, got {value!r}", allow_retries=False)
    return parsed
