"""The compute resource of each deployment: what ``MLTRAIN_COMPUTE`` selects, and ``mltrain manifests``' own.

- ``LocalCompute`` (``local``): ``python -m <module> --params JSON`` as a subprocess of the run worker,
  its Pipes context and messages through temp files.
- ``KubernetesCompute`` (``k8s``): the rendered Pod, or headless Service + Indexed Job for a workload
  over several nodes, submitted to the cluster; the Pipes context in the pod's env, its messages read
  from the reporting pod's logs.
- ``KubernetesHereCompute`` (``k8s-local``): exactly those objects, each pod's container run here;
  pod 0 talks to Dagster through temp files, as a local process does.
- ``RenderOnlyCompute``: ``k8s``'s objects, rendered and recorded, nothing launched.

The pod-rendering deployments hold their objects as a composed ``WorkloadObjects`` (``objects``),
built from their cluster settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import AssetExecutionContext, Failure

from mltrain_assets.launch import IndexedJob, KubernetesHere, KubernetesPod, Launcher, LocalProcess, RenderOnly
from mltrain_assets.launch.workload_resources import WorkloadProfile
from mltrain_assets.loopback import free_port
from mltrain_assets.resources.compute import COMPUTE_ENV, Compute, LaunchRequest, positive_int, step_of
from mltrain_assets.resources.k8s import executor_pod_template
from mltrain_assets.resources.spark import SparkConfig
from mltrain_assets.resources.workload_objects import IMAGE_PLACEHOLDER, WorkloadObjects, json_setting
from mltrain_assets.resources.workload_result import OK_EXITS, WorkloadResult
from mltrain_assets.workloads.common.params import DistributedParams, WorkloadParams
from mltrain_assets.workloads.common.spark import SparkSettings

if TYPE_CHECKING:
    from dagster import PipesContextInjector, PipesMessageReader


class LocalCompute(Compute):
    """``local``: the workload as a supervised subprocess of the run worker (``launch.LocalProcess``)."""

    deployment = "local"

    def launcher(self, request: LaunchRequest, reader: PipesMessageReader) -> Launcher:
        return LocalProcess(python=self.python_executable, ok_exits=OK_EXITS)


class PodCompute(Compute):
    """A deployment whose workloads are rendered Kubernetes objects: the cluster settings and the image rule."""

    # The workload image; empty: the run's own image (``workload_image``), so the chart's digest is its one place.
    image: str = ""
    namespace: str = "mltrain"
    service_account: str = ""
    # A Spark driver with a k8s:// master creates its executors: only it gets a token, and this account ("": the above).
    spark_service_account: str = ""
    image_pull_policy: str = "IfNotPresent"
    node_selector: str = "{}"  # JSON object, every workload pod
    training_node_selector: str = "{}"  # JSON object, pods that request GPUs (a GPU node pool)
    training_tolerations: str = "[]"  # JSON list, pods that request GPUs (e.g. nvidia.com/gpu taints)
    env_secret: str = ""  # Secret whose keys become env vars of every workload pod

    @classmethod
    def settings(cls) -> dict[str, Any]:
        from dagster import EnvVar

        return {
            **super().settings(),
            "image": EnvVar("MLTRAIN_K8S_IMAGE"),
            "namespace": EnvVar("MLTRAIN_K8S_NAMESPACE"),
            "service_account": EnvVar("MLTRAIN_K8S_SERVICE_ACCOUNT"),
            "spark_service_account": EnvVar("MLTRAIN_K8S_SPARK_SERVICE_ACCOUNT"),
            "env_secret": EnvVar("MLTRAIN_K8S_ENV_SECRET"),
            "node_selector": EnvVar("MLTRAIN_K8S_NODE_SELECTOR"),
            "training_node_selector": EnvVar("MLTRAIN_K8S_TRAINING_NODE_SELECTOR"),
            "training_tolerations": EnvVar("MLTRAIN_K8S_TRAINING_TOLERATIONS"),
        }

    @property
    def objects(self) -> WorkloadObjects:
        """This deployment's renderer (a bad JSON setting fails the step, naming it)."""
        return WorkloadObjects(
            namespace=self.namespace,
            service_account=self.service_account,
            spark_service_account=self.spark_service_account,
            image_pull_policy=self.image_pull_policy,
            node_selector=json_setting("MLTRAIN_K8S_NODE_SELECTOR", self.node_selector, dict),
            training_node_selector=json_setting(
                "MLTRAIN_K8S_TRAINING_NODE_SELECTOR", self.training_node_selector, dict
            ),
            training_tolerations=json_setting("MLTRAIN_K8S_TRAINING_TOLERATIONS", self.training_tolerations, list),
            env_secret=self.env_secret,
            spark=self.spark or SparkConfig(),
            rendezvous_port=self.rendezvous_port,
            env=self.workload_env(),
        )

    def workload_image(self, context: AssetExecutionContext | None = None) -> str:
        """``MLTRAIN_K8S_IMAGE``, else the code location's (``DAGSTER_CURRENT_IMAGE``), else the run's; else ``no_image``.

        In a run pod the K8sRunLauncher started, the run's origin records the image its code location
        runs (the chart's one digest).
        """
        if self.image:
            return self.image
        if os.environ.get("DAGSTER_CURRENT_IMAGE"):
            return os.environ["DAGSTER_CURRENT_IMAGE"]
        origin = getattr(getattr(context, "dagster_run", None), "job_code_origin", None) if context else None
        run_image = origin.repository_origin.container_image if origin is not None else None
        return run_image or self.no_image()

    def no_image(self) -> str:
        """Rendered or run from this checkout: a placeholder naming the setting (the cluster refuses instead)."""
        return IMAGE_PLACEHOLDER

    def render(
        self,
        context: AssetExecutionContext,
        params: WorkloadParams,
        *,
        timeout_s: float,
        profile: WorkloadProfile,
        pipes_env: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """The objects of this launch (Pipes bootstrap values as placeholders unless ``pipes_env`` is given)."""
        objects = self.objects
        template = objects.pod_template(
            profile,
            self.resources_for(profile, step_of(context), params),
            image=self.workload_image(context),
            gpus=self.topology()[1] if isinstance(params, DistributedParams) else None,
            timeout_s=timeout_s,
            run_id=context.run_id,
        )
        return objects.manifests(context, params, template, pipes_env=pipes_env)


class KubernetesHereCompute(PodCompute):
    """``k8s-local``: the objects ``k8s`` would submit, each pod's container run on this machine (``KubernetesHere``).

    Pod 0 talks to Dagster as a local process does: temp files, the Pipes bootstrap in its environment.
    """

    deployment = "k8s-local"

    def launch_objects(self, request: LaunchRequest, bootstrap: dict[str, str]) -> list[dict[str, Any]]:
        # Pod 0 gets the Pipes bootstrap in its environment here (``launch_env``), not rendered into its spec.
        objects = self.render(
            request.context, request.params, timeout_s=request.timeout_s, profile=request.profile, pipes_env={}
        )
        request.context.log.info(f"k8s-local: pods from {[o['kind'] for o in objects]}")
        return objects

    def launcher(self, request: LaunchRequest, reader: PipesMessageReader) -> Launcher:
        return KubernetesHere(port=free_port(), python=self.python_executable, ok_exits=OK_EXITS)


class KubernetesCompute(PodCompute):
    """``k8s``: a Pod, or a headless Service + Indexed Job over several nodes, submitted to the cluster."""

    deployment = "k8s"

    unschedulable_timeout_s: str = "300"  # a pod unschedulable this long fails its step (FailedScheduling)

    @classmethod
    def settings(cls) -> dict[str, Any]:
        from dagster import EnvVar

        return {**super().settings(), "unschedulable_timeout_s": EnvVar("MLTRAIN_K8S_UNSCHEDULABLE_TIMEOUT_S")}

    def no_image(self) -> str:
        raise Failure(
            description="no workload image: set MLTRAIN_K8S_IMAGE, or run the code location from its image "
            "(the Helm chart sets DAGSTER_CURRENT_IMAGE and records it on every run)",
            allow_retries=False,
        )

    def spark_settings(self, context: AssetExecutionContext | None = None) -> SparkSettings:
        settings = super().spark_settings(context)
        if not settings.master.startswith("k8s://"):
            return settings
        # Executors: the workload image, namespace and service account, and a pod template with the
        # workload pods' security context, secret references, placement and scratch.
        account = self.service_account
        accounts = {
            "spark.kubernetes.authenticate.driver.serviceAccountName": self.spark_service_account or account,
            "spark.kubernetes.authenticate.executor.serviceAccountName": account,
        }
        defaults = {
            "spark.kubernetes.container.image": self.workload_image(context),
            "spark.kubernetes.container.image.pullPolicy": self.image_pull_policy,
            "spark.kubernetes.namespace": self.namespace,
            **(accounts if account else {}),
        }
        template = self.objects.pod_template(
            "spark",
            self.resources_for("spark"),
            image=self.workload_image(context),
            executor=True,
            run_id=context.run_id if context is not None else "",
        )
        return dataclasses.replace(
            settings, conf={**defaults, **settings.conf}, executor_pod_template=executor_pod_template(template)
        )

    def pipes(self) -> tuple[PipesContextInjector, PipesMessageReader]:
        # dagster_k8s pulls in the Kubernetes client (~0.4 s): only a k8s launch pays for it.
        from dagster import PipesEnvContextInjector
        from dagster_k8s.pipes import PipesK8sPodLogsMessageReader

        return PipesEnvContextInjector(), PipesK8sPodLogsMessageReader()

    def launch_objects(self, request: LaunchRequest, bootstrap: dict[str, str]) -> list[dict[str, Any]]:
        # The pod gets the Pipes bootstrap rendered into its env; nothing else travels outside the objects.
        context, params = request.context, request.params
        return self.render(context, params, timeout_s=request.timeout_s, profile=request.profile, pipes_env=bootstrap)

    def launch_env(self, bootstrap: dict[str, str]) -> dict[str, str]:
        return {}  # a pod's environment is its spec's

    def launcher(self, request: LaunchRequest, reader: PipesMessageReader) -> Launcher:
        from mltrain_assets.resources.k8s_cluster import DagsterCluster

        timeout = positive_int("MLTRAIN_K8S_UNSCHEDULABLE_TIMEOUT_S", self.unschedulable_timeout_s, minimum=0)
        cluster = DagsterCluster(unschedulable_timeout_s=timeout)

        def follow_logs(namespace: str, pod: str) -> None:  # pod logs carry the Pipes messages on a cluster
            # Called once the pod started (and again for a pod the Job started in place of an evicted one).
            consume = reader.consume_pod_logs  # type: ignore[attr-defined]  # the pod-logs reader of pipes()
            consume(context=request.context, core_api=cluster.core_api, namespace=namespace, pod_name=pod)

        return (IndexedJob if request.distributed else KubernetesPod)(client=cluster, follow_logs=follow_logs)


class RenderOnlyCompute(KubernetesCompute):
    """``mltrain manifests``: ``k8s``'s objects rendered through the ``RenderOnly`` launcher, recorded, launched never.

    There is no Pipes session (nothing runs to talk to): the objects show the Pipes bootstrap as
    placeholders. The objects, the profile and the resources the step resolved are written to
    ``render_to`` (JSON), and the step stops there: with nothing run there is nothing to commit or report.
    """

    renders_only = True
    render_to: str  # the file the rendered launch is written to

    def no_image(self) -> str:
        return IMAGE_PLACEHOLDER

    def launch(self, request: LaunchRequest) -> WorkloadResult:
        context, params = request.context, request.params
        objects = self.render(context, params, timeout_s=request.timeout_s, profile=request.profile)
        result = RenderOnly().launch(request.plan(objects))
        resources = self.resources_for(request.profile, step_of(context), params)
        rendered = {"profile": request.profile, "resources": dataclasses.asdict(resources), "objects": result.objects}
        Path(self.render_to).write_text(json.dumps(rendered))
        raise Failure(description=f"{params.module}: rendered, not launched", allow_retries=False)


DEPLOYMENTS: dict[str, type[Compute]] = {
    cls.deployment: cls for cls in (LocalCompute, KubernetesCompute, KubernetesHereCompute)
}


def deployment_class(env: dict[str, str] | None = None) -> type[Compute]:
    """The compute resource class ``MLTRAIN_COMPUTE`` names (default ``local``)."""
    from mltrain_assets.settings import SettingsError

    value = (os.environ if env is None else env).get(COMPUTE_ENV) or "local"
    if value not in DEPLOYMENTS:
        raise SettingsError(f"{COMPUTE_ENV}={value!r} is not a deployment: use one of {', '.join(DEPLOYMENTS)}")
    return DEPLOYMENTS[value]
