"""The Kubernetes objects of a workload launch, from a deployment's cluster settings.

``WorkloadObjects`` is a plain object the pod-rendering compute resources build from their settings
(``resources/deployments.py``): the pod template of a profile (resources, placement, identity,
secrets, scratch, ``/dev/shm``), the Spark executor template, and the objects one launch submits
(a Pod, or a headless Service + Indexed Job). ``mltrain manifests`` prints them; the ``k8s``
launchers submit them; ``k8s-local`` runs them here.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from dagster import AssetExecutionContext, Failure

from mltrain_assets.launch.protocol import RUN_ID_LABEL
from mltrain_assets.launch.workload_resources import WorkloadProfile, WorkloadResources
from mltrain_assets.resources.credentials import CredentialInSpec, credential_findings, pod_safe_tracking_uri
from mltrain_assets.resources.k8s import (
    PodTemplate,
    object_name,
    render_indexed_job,
    render_pod,
    rendezvous_endpoint,
    spark_executor_object,
)
from mltrain_assets.resources.spark import SparkConfig
from mltrain_assets.workloads.common.params import DistributedParams, MlflowSettings, WorkloadParams

IMAGE_PLACEHOLDER = "<the run's image: set MLTRAIN_K8S_IMAGE or DAGSTER_CURRENT_IMAGE>"

PIPES_PLACEHOLDERS = {
    "DAGSTER_PIPES_CONTEXT": "<set at launch by the Pipes session>",
    "DAGSTER_PIPES_MESSAGES": "<set at launch by the Pipes session>",
}

# Set in the run pod from the downward API (helm-values runK8sConfig): the workload objects it creates are owned by it.
RUN_POD_NAME_ENV = "MLTRAIN_RUN_POD_NAME"
RUN_POD_UID_ENV = "MLTRAIN_RUN_POD_UID"


@dataclass(frozen=True)
class WorkloadObjects:
    """Renders a launch's objects from a deployment's cluster settings (held by the pod-rendering compute resources).

    ``env`` is what every workload pod gets besides its Secret (``Compute.workload_env``); the JSON
    settings arrive parsed (``json_setting``), so a bad one is refused where the resource builds this.
    """

    namespace: str = "mltrain"
    service_account: str = ""
    # A Spark driver with a k8s:// master creates its executors: only it gets a token, and this account ("": the above).
    spark_service_account: str = ""
    image_pull_policy: str = "IfNotPresent"
    node_selector: dict[str, str] = field(default_factory=dict)  # every workload pod
    training_node_selector: dict[str, str] = field(default_factory=dict)  # pods that request GPUs (a GPU pool)
    training_tolerations: list[dict[str, Any]] = field(default_factory=list)  # pods that request GPUs
    env_secret: str = ""  # a Secret whose keys become env vars of every workload pod
    spark: SparkConfig = field(default_factory=SparkConfig)
    rendezvous_port: int = 29400
    env: dict[str, str] = field(default_factory=dict)

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
        selector = dict(self.node_selector)
        tolerations: list = []
        if gpus:
            # GPU nodes are tainted and pooled: only pods that request GPUs go there.
            selector = {**selector, **self.training_node_selector}
            tolerations = list(self.training_tolerations)
        spark = self.spark
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
            namespace=self.namespace,
            image_pull_policy=self.image_pull_policy,
            requests={
                "cpu": resources.cpu,
                "memory": resources.memory,
                "ephemeral-storage": resources.ephemeral_storage,
            },
            limits={"memory": resources.memory, **({"nvidia.com/gpu": str(gpus)} if gpus else {})},
            node_selector=selector,
            tolerations=tolerations,
            service_account=(self.spark_service_account or self.service_account) if driver else self.service_account,
            api_access=driver,
            env_secret=self.env_secret,
            env={} if executor else dict(self.env),
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
        template: PodTemplate,
        *,
        pipes_env: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """The Kubernetes objects this launch submits (Pipes bootstrap values as placeholders unless given)."""
        # dagster_k8s pulls in the Kubernetes client (~0.4 s): only a deployment that renders pods pays for it.
        from dagster_k8s.pipes import get_pod_name

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


def json_setting(name: str, value: str, kind: type) -> Any:
    """A JSON setting (``MLTRAIN_K8S_NODE_SELECTOR``...) parsed, or a step failure naming it and its value."""
    try:
        parsed = json.loads(value or ("{}" if kind is dict else "[]"))
    except json.JSONDecodeError as exc:
        raise Failure(description=f"{name} is not valid JSON ({exc}): {value!r}", allow_retries=False) from None
    if not isinstance(parsed, kind):
        raise Failure(description=f"{name} must be a JSON {kind.__name__}, got {value!r}", allow_retries=False)
    return parsed
